// Moonborn SCIM console: a little script on top of pages that work without it.
// - forms with data-confirm ask before they are sent;
// - buttons with data-copy copy the text of the element they name;
// - inputs with data-filter hide the rows (of the selector they name) that do not contain their text.
"use strict";
document.addEventListener("submit", (e) => {
  const form = e.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    e.preventDefault();
  }
});
document.addEventListener("click", (e) => {
  const button = e.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = source.textContent.trim();
  const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 2000); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => select(source));
  } else {
    select(source);
  }
});
function select(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}
document.addEventListener("input", (e) => {
  const input = e.target.closest("input[data-filter]");
  if (!input) return;
  const needle = input.value.trim().toLowerCase();
  document.querySelectorAll(input.dataset.filter).forEach((row) => {
    const hay = (row.dataset.search || row.textContent).toLowerCase();
    row.hidden = needle !== "" && !hay.includes(needle);
  });
});
