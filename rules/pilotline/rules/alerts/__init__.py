"""Alert rules over the core's own events: inactive -> pending -> firing -> resolved. No I/O.

Shaped like the plant (and Prometheus' ``alerting.go``): ``observe(events)`` with what the
plant emitted, ``receive(sample)`` for numeric signal rules, ``collector(name, connected,
at_ms)`` for collector health, ``handle_timer(now)``, ``next_deadline()``, ``transitions()``;
``checkpoint()``/``restore()`` carry the current alerts across a restart.

Each (rule, machine) pair -- (rule, collector) for collector rules -- is one *instance* with a
condition that is true or false. When it becomes true the instance is *pending*; once it has
held for the rule's ``for:`` the instance *fires* (an ``AlertTransition`` with
``firing=True``); when it becomes false a firing instance *resolves* (``firing=False``) and a
pending one goes quietly back to inactive. A condition that stays true never fires twice.

Time: a state is known to the alert core when the plant *decided* it
(``StateChanged.decided_ms``: the end of the debounce, or the staleness deadline), not at the
earlier time the state is stamped with. Every input is applied at ``max(its time, now)`` after
the instance deadlines up to that time have fired, and deadlines due at the same millisecond
fire in configuration order (rule, then machine, then collector), so the same input gives the
same transitions in any chunking, as for the plant. The shell advances the plant to an
input's time before giving it here (``plant.receive`` does that for a sample; call
``plant.handle_timer(at_ms)`` and ``observe`` its events before ``collector``).

Rule kinds:

- ``StateCondition``: the machine's confirmed state is ``state`` (``state: down for 2m``);
- ``OfflineCondition``: the machine is ``offline`` (stale). Every machine counts as offline
  from the core's first input until its first state is confirmed, so a machine that never
  reports also alerts;
- ``SignalCondition``: a numeric signal above (or below) a threshold, cleared only once it
  is back below (above) ``clear`` (hysteresis);
- ``CapacityCondition``: an offered idle window that has lasted ``idle_for_ms`` (the ``for:``
  is the window's age, not the time since the condition was seen);
- ``CollectorCondition``: a collector is disconnected (``collector: disconnected``). One
  instance per collector (``Alerts(collectors={machine: collector})``); it applies when any
  of the collector's machines matches the rule's ``machines:``/``zones:``. Its alerts carry
  ``machine=<collector>``, ``zone=<its machines' zone, or "*" if they differ>``, ``owner=""``
  and ``value`` = seconds disconnected. A collector counts as connected until told otherwise.
- ``InterlockCondition``: the machine's soft interlock does not read back (``interlock:
  unknown``), as told by ``interlock(machine, unknown, at_ms)``; ``value`` = seconds
  unknown. Neither suppressed in maintenance nor inhibited: a permission signal nobody can
  confirm matters whatever the machine does. A machine's interlock counts as reading back
  until told otherwise.

Inhibition (the condition is evaluated as false, or held, while a cause is in effect; when the
cause ends the condition is evaluated afresh from that moment, so ``for:`` restarts):

- *offline* -> signal rules: do not start or progress (a pending instance goes back to
  inactive); an instance already firing holds until a value clears it;
- *maintenance* (the machine's confirmed state) -> signal, capacity and state rules (not a
  ``state: maintenance`` rule) with ``suppress_in_maintenance`` (the default): they do not
  start, a pending instance goes back to inactive and a firing one *resolves* -- whoever put
  the machine into maintenance has it in hand. A signal rule keeps following its values
  (hysteresis) meanwhile and uses its last answer when maintenance ends;
- *collector disconnected* -> the offline and state rules of its machines: they do not
  start, a pending instance goes back to inactive, a firing one holds (no transition). So a
  collector that drops raises one collector alert, not an ``offline`` alert per machine.
  On reconnect they are evaluated against the machines' states at that moment: a machine
  whose staleness the outage caused is ``offline`` until its first sample's state is
  confirmed, so a held ``down`` alert resolves then and fires again after its ``for:`` if the
  machine is still down; a machine that stays silent fires ``offline`` ``for:`` after the
  reconnect. The shell must report a disconnect before the offline rules' ``for:`` runs out
  (an offline alert already firing holds through the outage).

Checkpoint: ``checkpoint()`` (after draining ``transitions()``) returns plain JSON-able data;
``restore(data)`` on a fresh ``Alerts`` (one that has seen no input) continues exactly where
it left off, including pending deadlines, so a firing alert does not fire again. Instances are
matched by rule name and machine (or collector) name: those of rules, machines and collectors
no longer configured are ignored, new ones start as at the core's first input, and a rule
whose condition changed (other than its ``for:``) starts over (a firing instance of it
resolves at the restore time).

Messages are rendered with ``str.format_map`` over a dict of plain values: ``rule``,
``machine``, ``zone``, ``owner``, ``severity``, ``value``, ``state`` (for a collector alert:
``connected``/``disconnected``), ``status``; no attribute or index access
(``validate_template`` refuses it at load time), no ``eval``.

Modules: ``conditions`` (the rules and what each kind means), ``core`` (``Alerts``: the
instances and their lifecycle), ``transitions`` (what the core reports), ``templates``
(messages), ``checkpoint`` (the checkpoint's data and its checks). The severities and label
names are ``pilotline.rules.labels``'s, re-exported here.
"""

from pilotline.rules.alerts.checkpoint import CHECKPOINT_VERSION
from pilotline.rules.alerts.conditions import (
    AlertRule,
    CapacityCondition,
    CollectorCondition,
    Condition,
    InterlockCondition,
    OfflineCondition,
    SignalCondition,
    StateCondition,
    suppressible,
)
from pilotline.rules.alerts.core import Alerts
from pilotline.rules.alerts.templates import TEMPLATE_FIELDS, render, validate_template
from pilotline.rules.alerts.transitions import AlertTransition, AlertView, Status
from pilotline.rules.labels import SEVERITIES, Severity

__all__ = [
    "CHECKPOINT_VERSION",
    "SEVERITIES",
    "TEMPLATE_FIELDS",
    "AlertRule",
    "AlertTransition",
    "AlertView",
    "Alerts",
    "CapacityCondition",
    "CollectorCondition",
    "Condition",
    "InterlockCondition",
    "OfflineCondition",
    "Severity",
    "SignalCondition",
    "StateCondition",
    "Status",
    "render",
    "suppressible",
    "validate_template",
]
