/* Keyboard shortcuts of eval-viewer: ← / → step through the ranking, Esc goes back to the overview.
 *
 * A key clicks the visible button that declares it (data-hotkey="ArrowLeft" ...), so the keyboard and the mouse run
 * the same Dash callback and this file knows no component ids. Keystrokes typed into inputs, dropdowns or the table's
 * filters are left alone, and so are keys with modifiers (browser shortcuts).
 */
(function () {
  "use strict";

  function typingInto(target) {
    if (!target || !target.closest || target === document.body) {
      return false;
    }
    if (target.offsetParent === null) {
      return false;  // focus left behind in a view that is now hidden (the table row that opened this datapoint)
    }
    if (target.isContentEditable) {
      return true;
    }
    return Boolean(target.closest("input, textarea, select, [role='combobox'], [role='listbox'], .ag-root-wrapper"));
  }

  function visible(element) {
    return element.offsetParent !== null && !element.closest("[hidden]");
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) {
      return;
    }
    if (typingInto(event.target)) {
      return;
    }
    var buttons = document.querySelectorAll('[data-hotkey="' + event.key + '"]');
    for (var i = 0; i < buttons.length; i++) {
      if (visible(buttons[i]) && !buttons[i].disabled) {
        event.preventDefault();
        buttons[i].click();
        return;
      }
    }
  });
})();
