"""What the API reads and calls, one protocol per group of routes.

The routes depend on these, not on the gateway's class: a route group names the few members
it uses, the running ``Gateway`` satisfies them all (``Api``), and a test can hand a route
group anything else that does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from pilotline.gateway.api.config import ApiConfig
from pilotline.gateway.api.metrics import Gauges, Metrics
from pilotline.gateway.forecasts import Forecasts, Outlook
from pilotline.gateway.notify.alerting import Marks
from pilotline.gateway.shard import Layout
from pilotline.gateway.store.alert_state import StoredSilence
from pilotline.gateway.store.feed_tokens import FeedTokens
from pilotline.gateway.store.reservations import Reservations
from pilotline.gateway.store.tokens import TokenRegistry
from pilotline.rules import MachineView
from pilotline.rules.alerts import AlertView
from pilotline.rules.booking import BookingRules, Reservation
from pilotline.rules.booking.charges import ChargeRule
from pilotline.rules.booking.metering import Change
from pilotline.rules.dispatch import Silence
from pilotline.rules.forecast import HourForecast
from pilotline.rules.spec import PlantSpec
from pilotline.rules.utilization import Utilization

# -- the parts of the gateway the routes read ---------------------------------------------


class Owner(Protocol):
    @property
    def show_to_tenants(self) -> bool: ...


class ApiSettings(Protocol):
    """The site configuration's part the API reads."""

    @property
    def api(self) -> ApiConfig:
        """Where to listen, which hosts to answer to, what clients may hold."""
        ...

    @property
    def owners(self) -> Mapping[str, Owner]: ...


class PlantView(Protocol):
    @property
    def now_ms(self) -> int | None: ...
    def view(self) -> list[MachineView]: ...


class AlertList(Protocol):
    def view(self) -> list[AlertView]: ...


class TokenStore(Protocol):
    def tokens(self) -> TokenRegistry: ...


class WindowStore(Protocol):
    def windows(
        self,
        since_ms: int,
        machine: str | None = None,
        limit: int = 1000,
        *,
        among: Collection[str] | None = None,
        after: tuple[int, str] | None = None,
    ) -> list[dict[str, Any]]: ...


class QuarantineStore(Protocol):
    def quarantine(
        self, limit: int = 100, before_id: int | None = None
    ) -> list[dict[str, Any]]: ...


class ReservationStore(Protocol):
    def reservations(self) -> Reservations: ...


class FeedStore(Protocol):
    def reservations(self) -> Reservations: ...
    @property
    def feeds(self) -> FeedTokens: ...


class ApiStore(TokenStore, WindowStore, QuarantineStore, ReservationStore, FeedStore, Protocol):
    pass


class BookingSettings(ApiSettings, Protocol):
    """The site configuration's part booking reads: each machine's rules and maintenance."""

    def booking_rules(self, machine_id: str) -> BookingRules: ...
    def maintenance(self, machine_id: str) -> tuple[tuple[int, int], ...]: ...
    def charge_rule(self, machine_id: str) -> ChargeRule: ...
    @property
    def shard_layout(self) -> Layout | None:
        """A sharded gateway's whole site: who owns the machines it does not keep."""
        ...


# -- one port per group of routes ---------------------------------------------------------


class ServicePort(Protocol):
    """``/health``, ``/metrics``, access control and the listening socket (app.py)."""

    @property
    def config(self) -> ApiSettings: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def store(self) -> TokenStore: ...
    def health(self) -> dict[str, Any]: ...
    def gauges(self) -> Gauges: ...


class ReservedNow(Protocol):
    """The live bookings holding the machines (service/reserved.py)."""

    def holding(self, t_ms: int) -> Mapping[str, Reservation]:
        """Machine → the live reservation holding it at ``t_ms``."""
        ...


class CapacityPort(Protocol):
    """``/api/machines``, ``/api/capacity``, ``/api/forecast`` (capacity.py)."""

    @property
    def reserved(self) -> ReservedNow: ...
    def clock_ms(self) -> int: ...

    @property
    def config(self) -> ApiSettings: ...
    @property
    def plant(self) -> PlantView: ...
    @property
    def plant_spec(self) -> PlantSpec: ...
    @property
    def forecasts(self) -> Mapping[str, Sequence[HourForecast]]: ...


class CatalogPort(Protocol):
    """``/api/catalog`` (catalog.py)."""

    @property
    def config(self) -> BookingSettings: ...
    @property
    def plant_spec(self) -> PlantSpec: ...
    def clock_ms(self) -> int: ...


class HistoryPort(Protocol):
    """``/api/windows``, ``/api/utilization`` (history.py)."""

    @property
    def plant_spec(self) -> PlantSpec: ...
    @property
    def store(self) -> WindowStore: ...
    def clock_ms(self) -> int: ...
    def utilization(
        self, from_ms: int, to_ms: int, *, among: Collection[str] | None = None
    ) -> Utilization: ...


class AlertsPort(Protocol):
    """``/api/alerts``, ``/api/alerts/ack``, ``/api/silences`` (alerts.py)."""

    @property
    def alerts(self) -> AlertList: ...
    def clock_ms(self) -> int: ...
    def acknowledge(self, rule: str, machine: str, by: str, comment: str = "") -> int | None: ...
    def add_silence(
        self, matchers: dict[str, str], starts_ms: int, ends_ms: int, by: str, comment: str = ""
    ) -> Silence: ...
    def end_silence(self, silence_id: str) -> StoredSilence | None: ...
    def silences(self) -> list[StoredSilence]: ...
    def alert_marks(self, view: AlertView) -> Marks: ...


class QuarantinePort(Protocol):
    """``/api/quarantine`` (quarantine.py)."""

    @property
    def store(self) -> QuarantineStore: ...


class ForecastOutlook(Protocol):
    def outlook(self, machine: str, start_ms: int, end_ms: int) -> Outlook | None:
        """A machine's forecast over ``[start_ms, end_ms)``, summed up."""
        ...


class BookingPort(Protocol):
    """``/api/offers``, ``/api/reservations`` (booking.py)."""

    @property
    def forecasts(self) -> ForecastOutlook:
        """The latest forecast run: each slot's advice (forecast_advice.py)."""
        ...

    @property
    def config(self) -> BookingSettings: ...
    @property
    def plant(self) -> PlantView: ...
    @property
    def plant_spec(self) -> PlantSpec: ...
    @property
    def store(self) -> ReservationStore: ...
    def clock_ms(self) -> int: ...


class StateChanges(Protocol):
    def changes(
        self, from_ms: int, now_ms: int, machines: Collection[str]
    ) -> dict[str, list[Change]]: ...


class UsagePort(Protocol):
    """``/api/usage`` (usage.py): metered from the lifecycle's state changes."""

    @property
    def config(self) -> BookingSettings: ...
    @property
    def plant_spec(self) -> PlantSpec: ...
    @property
    def store(self) -> ReservationStore: ...
    @property
    def bookings(self) -> StateChanges: ...
    def clock_ms(self) -> int: ...


class FeedPort(Protocol):
    """``/api/feeds``, ``/ical/{feed}.ics`` (feeds.py)."""

    @property
    def config(self) -> BookingSettings: ...
    @property
    def plant_spec(self) -> PlantSpec: ...
    @property
    def store(self) -> FeedStore: ...
    def clock_ms(self) -> int: ...


class BoardSettings(BookingSettings, Protocol):
    """What the board (board/) shows of the site beside the API's answers."""

    @property
    def site(self) -> str: ...
    @property
    def tz(self) -> ZoneInfo: ...


class Api(
    ServicePort, CapacityPort, CatalogPort, HistoryPort, AlertsPort, QuarantinePort,
    BookingPort, UsagePort, FeedPort, Protocol,
):
    """Everything the API needs: what ``create_app`` and ``serve_api`` take."""

    @property
    def config(self) -> BoardSettings: ...

    @property
    def store(self) -> ApiStore: ...

    @property
    def forecasts(self) -> Forecasts: ...
