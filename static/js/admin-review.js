// Keyboard review in the admin's drawing list: label row after row without the mouse.
// Nothing is stored until the page is saved (S), exactly as when labels are picked by hand.

// Keys typed into these mean something to the control itself: a search box, a select's
// type-to-choose. Checkboxes are not among them: a ticked row keeps its focus on its checkbox,
// and the shortcuts must go on working there.
const TYPING = 'input:not([type="checkbox"]):not([type="radio"]), select, textarea';

const rows = [...document.querySelectorAll("#result_list tbody tr")];
const saveButton = document.querySelector('#changelist-form [name="_save"]');
let current = 0;

function show(index) {
  rows[current].classList.remove("review-current");
  current = Math.max(0, Math.min(rows.length - 1, index));
  rows[current].classList.add("review-current");
  rows[current].scrollIntoView({ block: "nearest" });
}

function review(row, label, excluded) {
  const select = row.querySelector(".field-true_label select");
  select.value = label;
  row.querySelector(".field-is_excluded input").checked = excluded;
  // The admin's own script listens for this to warn before an action would drop unsaved labels.
  select.dispatchEvent(new Event("change", { bubbles: true }));
  show(current + 1);
}

function onKeydown(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.target instanceof Element && event.target.closest(TYPING)) return;
  const row = rows[current];
  const key = event.key.toLowerCase();
  if (key === "arrowdown" || key === "j") show(current + 1);
  else if (key === "arrowup" || key === "k") show(current - 1);
  else if (/^[0-9]$/.test(key)) review(row, key, false);
  else if (key === "c") review(row, row.querySelector(".field-predicted_label").textContent.trim(), false);
  else if (key === "x") review(row, "", true);
  else if (key === "s") saveButton.click();
  else return;
  event.preventDefault();
}

// Only a list with editable rows (someone who may relabel, and at least one drawing) is reviewed here.
if (rows.length && saveButton) {
  document.addEventListener("keydown", onKeydown);
  rows.forEach((row, index) => row.addEventListener("click", () => show(index)));
  show(0);
}
