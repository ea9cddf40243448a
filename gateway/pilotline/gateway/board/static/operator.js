// The operator view: say in words what changed when the plant table is swapped (the table
// itself is not a live region: a screen reader would read all of it every time), and say
// when the page stops updating, so a frozen table never passes for a live one.
(() => {
  const live = document.getElementById("op-live");
  const news = document.getElementById("op-news");
  const tz = live ? live.dataset.tz : undefined;
  const clock = (date) => date.toLocaleTimeString("en-GB", { timeZone: tz });
  const states = () => {
    const seen = new Map();
    for (const row of document.querySelectorAll("#plant tr[data-machine]")) {
      seen.set(row.dataset.machine, row.dataset.state);
    }
    return seen;
  };
  let before = states();

  document.addEventListener("htmx:afterSettle", () => {
    const now = states();
    const changed = [];
    for (const [machine, state] of now) {
      const was = before.get(machine);
      if (was !== undefined && was !== state) changed.push(`${machine} ${was} → ${state}`);
    }
    before = now;
    if (changed.length && news) news.textContent = `At ${clock(new Date())}: ${changed.join(", ")}.`;
  });

  let staleSince = null;
  document.addEventListener("htmx:afterRequest", (event) => {
    // also after a network error (successful is then false)
    if (!live || event.detail.elt.id !== "plant") return;
    const at = clock(new Date());
    if (event.detail.successful) {
      staleSince = null;
      live.textContent = `Live: checked at ${at}.`;
    } else {
      if (staleSince === null && news) news.textContent = `At ${at} the page stopped updating.`;
      staleSince = staleSince || at;
      live.textContent = `Not updating since ${staleSince}: the gateway does not answer; still trying.`;
    }
    live.classList.toggle("stale", staleSince !== null);
  });
})();
