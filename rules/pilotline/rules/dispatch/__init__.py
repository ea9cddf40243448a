"""Notification policy over alert transitions (Alertmanager's part): routing to channels,
grouping, repeats, silences and acknowledgements. Pure: no I/O, time is passed in.

Shaped like the plant and the alert core: ``receive(transitions)``, ``handle_timer(now)``,
``next_deadline()``, ``notifications()``. Every input (a transition, an acknowledgement, a
silence added or expired) is applied at ``max(its time, now)`` after the deadlines up to that
time have fired, so the same input gives the same notifications in any chunking and with any
timer calls in between (property test in tests/rules/test_dispatch.py).

Semantics (after Prometheus Alertmanager's ``dispatch.go`` and its dedup stage):

- **Alerts.** An alert is one (rule, machine) pair; its labels (``LABELS``) are
  ``rule``, ``zone``, ``severity``, ``machine`` and ``owner`` of its transitions. A firing
  transition for an alert already firing (or a resolution for one not firing) only updates
  the transition the alert's notifications carry.
- **Routing.** Each ``Route`` is a channel. An alert goes to every route whose
  ``min_severity`` it meets (info < warning < critical) and whose ``zones`` (None: all)
  contain its zone.
- **Grouping.** Per (channel, values of the ``group_by`` labels) there is one aggregation
  group. A new group flushes first ``group_wait`` after its first alert arrived (the 50
  machines of a zone that go down together make one notification per channel). After that
  first flush the group lives on a grid of ``group_interval`` steps from it: a change is
  flushed at the first grid tick strictly after it, so an already-notified group is sent at
  most once per ``group_interval`` (Alertmanager's group ticker, without idle ticks). A
  group left with no alerts is dropped ``group_interval`` after its last flush (at once if
  it never flushed); the next alert of that key then starts a new group, with
  ``group_wait`` again, so even a new group never follows the old one's last notification
  within ``group_interval``.
- **What a flush sends.** Only alerts whose notified status changes: a firing alert not yet
  notified on that channel (*newly firing*) and a resolved alert whose firing was notified
  (*newly resolved*), in one notification of ``kind`` ``firing`` if any alert in it newly
  fires, else ``resolved``. Status, not episodes, is compared: an alert that resolves and
  fires again between two flushes of its group sends nothing (the recipients' picture did
  not change), and one that fires and resolves before it was ever flushed sends nothing at
  all (it leaves its group at once). A resolution is only ever sent for a notified firing.
- **Repeat.** A firing alert that was notified, is not acknowledged and not silenced is sent
  again, in a ``repeat`` notification with the group's other alerts due at the same tick,
  ``repeat_interval`` after it was last sent (rounded up to the group's grid). A flush that
  has both changes and repeats sends the change notification first, then the repeat.
- **Acknowledgements** are per alert, for every channel: an acknowledged alert is not
  repeated. They do not stop its first notification or its resolution, and they end when
  the alert resolves (a new episode needs a new acknowledgement).
- **Silences.** An alert whose labels equal all of an active silence's matchers
  (``starts_ms <= t < ends_ms``) is not sent as firing or as a repeat; the resolution of an
  alert whose firing *was* sent before the silence still goes out (whoever was paged gets the
  all-clear). When a silence ends (its ``ends_ms`` deadline, or ``expire_silence``) the
  groups of the alerts it covered are woken: a matching alert still firing and never sent
  goes out at that group's next tick, and overdue repeats resume. Silences change neither
  the alerts' own state nor the ``alert`` measurement (the gateway writes those from the
  transitions).

``checkpoint()`` is a JSON-able dict of the whole state (alerts, acknowledgements, silences,
groups, undelivered notifications); ``restore`` on a dispatcher built from the same
configuration continues exactly where it stopped. With a changed configuration, groups of
channels no longer configured or of another ``group_by`` are dropped, and firing alerts join
the groups they now belong to as not yet notified there.

Modules: ``dispatcher`` (``Dispatcher``: the policy above, and its deadlines), ``routes``,
``silences``, ``groups`` (the dispatcher's records of alerts and aggregation groups),
``notifications`` (what it reports), ``checkpoint`` (the checkpoint's JSON shape). The
severities and label names are ``pilotline.rules.labels``'s, re-exported here.
"""

from pilotline.rules.dispatch.checkpoint import CHECKPOINT_VERSION
from pilotline.rules.dispatch.dispatcher import Dispatcher
from pilotline.rules.dispatch.notifications import AlertState, Notification, NotificationKind
from pilotline.rules.dispatch.routes import Route
from pilotline.rules.dispatch.silences import Silence
from pilotline.rules.labels import (
    LABELS,
    SEVERITIES,
    Label,
    Labelled,
    Severity,
    at_least,
    labels_of,
)

GROUP_LABELS = LABELS
"""The labels an alert can be grouped and silenced by (the name this module always had)."""

__all__ = [
    "CHECKPOINT_VERSION",
    "GROUP_LABELS",
    "LABELS",
    "SEVERITIES",
    "AlertState",
    "Dispatcher",
    "Label",
    "Labelled",
    "Notification",
    "NotificationKind",
    "Route",
    "Severity",
    "Silence",
    "at_least",
    "labels_of",
]
