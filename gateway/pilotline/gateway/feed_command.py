"""``pilotline feed create|revoke|list``: calendar feed tokens from the command line, as
``pilotline token`` does for API tokens (an operator issuing a principal's feed without its
API token; the principals themselves use ``POST /api/feeds``).

``create --token NAME`` prints the feed's path ``/ical/<feed-token>.ics`` once (put the API's
public address in front of it); issuing again replaces that principal's feed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any, shard_arg: Callable[[str], object], shard_help: str) -> None:
    feed = sub.add_parser("feed", help="create, list or revoke calendar feed URLs")
    actions = feed.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="issue the feed of an API token's principal and print its path once"
    )
    revoke = actions.add_parser("revoke", help="revoke the feed of an API token's principal")
    listing = actions.add_parser("list", help="list feeds (principals, never tokens)")
    for parser in (create, revoke, listing):
        parser.add_argument("-c", "--config", type=Path, required=True,
                            help="site configuration")
        parser.add_argument("--shard", type=shard_arg, default=None, help=shard_help)
    for parser in (create, revoke):
        parser.add_argument("--token", required=True, metavar="NAME",
                            help="the API token (by name) whose principal the feed shows")


def run(args: argparse.Namespace, shard_store: Callable[[Path, Any, str], Any]) -> int:
    """``shard_store``: the CLI's opening of a gateway's store for ``--shard``
    (cli._shard_store: it says why when it cannot)."""
    from pilotline.gateway.api.feeds import feed_path
    from pilotline.gateway.clock import wall_clock_ms
    from pilotline.gateway.store.tokens import Role

    opened = shard_store(args.config, args.shard, "feed")
    if opened is None:
        return 1
    _config, store = opened
    now_ms = wall_clock_ms()
    with store:
        if args.action == "list":
            for feed in store.feeds.list():
                status = "active" if feed.revoked_ms is None else "revoked"
                print(f"{feed.principal}\t{feed.id}\t{status}")
            return 0
        if args.action == "revoke":
            if not store.feeds.revoke(args.token, now_ms=now_ms):
                print(f"pilotline feed: {args.token!r} has no active feed", file=sys.stderr)
                return 1
            print(f"revoked the feed of {args.token}", file=sys.stderr)
            return 0
        info = next((t for t in store.tokens().list() if t.name == args.token), None)
        if info is None or info.revoked_ms is not None:
            print(f"pilotline feed: no active API token named {args.token!r}", file=sys.stderr)
            return 1
        if info.role is Role.SCRAPER:
            print("pilotline feed: a scraper sees no bookings: no feed", file=sys.stderr)
            return 1
        token = store.feeds.issue(args.token, now_ms=now_ms)
    print(feed_path(token))
    print(f"feed of {args.token!r} ({info.role}{f' {info.subject}' if info.subject else ''}) "
          "created: shown this once, only its hash is kept; prefix the API's address",
          file=sys.stderr)
    return 0
