// Touchstream dashboard: small progressive enhancements; every page works without them.
// - A filter changed with the mouse applies at once; from the keyboard, Enter or "Apply" does
//   (so arrowing through a select does not reload the page at every step).
// - Typing a date switches the period to "custom"; a preset period sends no dates.
// - After a reload, focus returns to the control that applied the filters.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  if (!form) { return; }
  var pointer = false;
  document.addEventListener("pointerdown", function () { pointer = true; }, true);
  document.addEventListener("keydown", function () { pointer = false; }, true);
  var period = form.elements.namedItem("period");
  function syncDates() {
    if (!period) { return; }
    ["from", "to"].forEach(function (name) {
      var input = form.elements.namedItem(name);
      if (input) { input.disabled = period.value !== "custom"; }
    });
  }
  form.addEventListener("change", function (event) {
    var target = event.target;
    if ((target.name === "from" || target.name === "to") && period) { period.value = "custom"; }
    syncDates();
    if (pointer && target.type !== "date" && target.type !== "text" && target.type !== "search" &&
        target.type !== "number") {
      remember(target);
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", function () {
    syncDates();
    if (document.activeElement && document.activeElement.id) { remember(document.activeElement); }
  });
  function remember(control) {
    try { sessionStorage.setItem("touchstream-focus", control.id || ""); } catch (e) { /* storage off */ }
  }
  syncDates();
  try {
    var id = sessionStorage.getItem("touchstream-focus");
    sessionStorage.removeItem("touchstream-focus");
    var el = id && document.getElementById(id);
    if (el) { el.focus(); }
  } catch (e) { /* storage off */ }
}());
