// The board's own script: hand htmx the session's CSRF token on every request it sends
// (forms carry it as a field too, so they work without JavaScript).
document.addEventListener("htmx:configRequest", (event) => {
  const token = document.body.dataset.csrf;
  if (token) event.detail.headers["X-CSRF-Token"] = token;
});
