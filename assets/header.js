/* The sticky header's height as a CSS variable (--ev-header-height), so what sticks below it (the datapoint view's
 * navigation bar with ← and →) sits under it rather than behind it: the header wraps onto a second row when the page
 * is narrower than its selectors. The header is part of the static layout: found once by its class (this file knows
 * no component ids), then watched for size changes.
 */
(function () {
  "use strict";
  var sizes = new ResizeObserver(function (entries) {
    var height = entries[0].target.getBoundingClientRect().height;
    document.documentElement.style.setProperty("--ev-header-height", Math.round(height) + "px");
  });

  function found() {
    var header = document.querySelector(".ev-header");
    if (header) {
      sizes.observe(header);
    }
    return Boolean(header);
  }

  if (!found()) {
    var waiting = new MutationObserver(function () {
      if (found()) {
        waiting.disconnect();
      }
    });
    waiting.observe(document.documentElement, {childList: true, subtree: true});
  }
})();
