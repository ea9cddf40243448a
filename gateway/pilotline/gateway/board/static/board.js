// The board's own script: hand htmx the session's CSRF token on every request it sends
// (forms carry it as a field too, so they work without JavaScript).
document.addEventListener("htmx:configRequest", (event) => {
  const token = document.body.dataset.csrf;
  if (token) event.detail.headers["X-CSRF-Token"] = token;
});

// A button with data-copy="<input id>" copies that input's value (the calendar-feed link),
// and says so in the element marked data-copied-for="<input id>".
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const input = document.getElementById(button.dataset.copy);
  const said = document.querySelector(`[data-copied-for="${button.dataset.copy}"]`);
  if (!input) return;
  input.select();
  let copied = false;
  try {
    await navigator.clipboard.writeText(input.value);
    copied = true;
  } catch {
    copied = document.execCommand("copy"); // no clipboard API outside a secure context
  }
  if (said) said.textContent = copied ? "Copied." : "Select the link and copy it.";
});
