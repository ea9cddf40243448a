"""Loading the site configuration: one YAML file, validated all at once, every mistake with
its line.

Theory of operation. ``load_config`` reads the file into plain data (``yamlfile``: straight
from libyaml's events when it is plain YAML, else through PyYAML's node tree). Four kinds of
check run on it, and all their findings are gathered before anything is raised:

1. duplicate keys in any mapping (PyYAML would silently keep the last one);
2. the pydantic models (``extra="forbid"`` everywhere, so a misspelt key is an error), each
   error turned into a ``ConfigIssue`` whose path is rebuilt from pydantic's ``loc``
   (``validation``);
3. site-wide checks across objects (``checks``: duplicate ids and topics, a machine's
   source, an MQTT machine without a broker, an OPC UA state signal that is not a node), run
   on the raw data so they report even when some other part of the file is broken;
4. the files that secrets and certificates are read from exist and are readable (``files``;
   their content is never read here).

Each issue's line comes from walking the node tree along its path (``locate``); the tree is
composed (again) only when there is an issue to locate (``yamlfile.Tree``). ``ConfigError``
carries the issues; ``str()`` of it lists them one per line, ``file:line path: message``.

Relative paths in the file (``store``, ``*_file``) are relative to the directory of the
configuration file, so ``pilotline check`` and ``pilotline run`` agree wherever they are
started from; ``load_config`` returns them resolved.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ValidationError

from pilotline.gateway.config import yamlfile
from pilotline.gateway.config.checks import cross_checks
from pilotline.gateway.config.errors import ConfigError, ConfigIssue
from pilotline.gateway.config.files import exposed_files, file_issues, resolve_paths
from pilotline.gateway.config.locate import duplicate_keys, issue, line
from pilotline.gateway.config.site import CROSS_CHECKED, SiteConfig
from pilotline.gateway.config.validation import kind_of, validation_issues

__all__ = ["load_config"]


def load_config(
    path: Path, *, check_files: bool = True, warnings: list[ConfigIssue] | None = None
) -> SiteConfig:
    """Read, validate and resolve a site configuration; ``ConfigError`` lists every mistake.

    ``check_files=False`` skips checking that secret and certificate files exist (to check a
    production file on another machine). ``warnings``, when given, receives what is worth
    fixing but still works: secret files that others than their owner may read.
    """
    source = str(path)
    text = yamlfile.read_text(path, source)
    issues: list[ConfigIssue] = []
    data = yamlfile.quick_data(text)
    if data is None:  # not the plain subset (or a mistake): compose the node tree
        root, data = yamlfile.compose(text, source)
        issues.extend(duplicate_keys(root))
        if not isinstance(data, dict):
            kind = "empty" if data is None else f"a {kind_of(data)}"
            raise ConfigError(
                [
                    *issues,
                    ConfigIssue(
                        "",
                        line(root),
                        f"the file is {kind}: expected a mapping "
                        "with site:, zones: and the other sections",
                    ),
                ],
                source,
            )
        del root  # see yamlfile.Tree: not kept while the models are built
    tree = yamlfile.Tree(text, source)
    config: SiteConfig | None = None
    try:
        config = SiteConfig.model_validate(data, context={CROSS_CHECKED: True})
    except ValidationError as exc:
        issues.extend(validation_issues(exc, tree.root, SiteConfig))
    issues.extend(issue(tree.root, loc, msg) for loc, msg in cross_checks(data))
    base = path.absolute().parent
    if check_files:
        issues.extend(file_issues(SiteConfig, data, tree, base))
        if warnings is not None:
            warnings.extend(exposed_files(SiteConfig, data, tree, base))
    if issues or config is None:
        raise ConfigError(_ordered(issues), source)
    del data
    config = resolve_paths(config, base)
    _share_fields_sets(config)
    return config


def _ordered(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.line is None, i.line or 0))


def _share_fields_sets(config: SiteConfig) -> None:
    """Let equal ``model_fields_set`` of frozen models be one set object.

    pydantic keeps a set of the fields given for every model instance, about half of a
    machine's models (measured: benchmarks/README.md), the same few sets over and over. A
    frozen model never changes its set (``model_copy`` copies it first), so sharing is safe;
    models that are not frozen keep their own.
    """
    shared: dict[frozenset[str], set[str]] = {}
    stack: list[BaseModel] = [config]
    while stack:
        model = stack.pop()
        if model.model_config.get("frozen"):
            own = model.__pydantic_fields_set__
            own = shared.setdefault(frozenset(own), own)
            object.__setattr__(model, "__pydantic_fields_set__", own)
        for value in model.__dict__.values():
            if isinstance(value, BaseModel):
                stack.append(value)
            elif isinstance(value, list | tuple):
                stack.extend(v for v in value if isinstance(v, BaseModel))
