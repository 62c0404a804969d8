/* Static markup in the datapoint view: containers nothing listens to arrive as one element whose children are in
 * its data-ev-html attribute (HTML written, every text escaped, by the server's static-HTML adapter); this puts
 * them in place. One Dash component instead of dozens is what keeps a datapoint view quick to mount.
 *
 * React renders those elements without children and never touches their content; when it re-uses one for the next
 * datapoint it only changes the attribute, which is watched too. This file knows no component ids.
 */
(function () {
  "use strict";
  var ATTR = "data-ev-html";

  function fill(element) {
    var markup = element.getAttribute(ATTR);
    if (markup !== null && element.__evHtml !== markup) {
      element.__evHtml = markup;
      element.innerHTML = markup;
    }
  }

  function scan(node) {
    if (node.nodeType !== 1) {
      return;
    }
    if (node.hasAttribute(ATTR)) {
      fill(node);
    }
    var inside = node.querySelectorAll("[" + ATTR + "]");
    for (var i = 0; i < inside.length; i++) {
      fill(inside[i]);
    }
  }

  new MutationObserver(function (records) {
    for (var i = 0; i < records.length; i++) {
      var record = records[i];
      if (record.type === "attributes") {
        fill(record.target);
      } else {
        for (var j = 0; j < record.addedNodes.length; j++) {
          scan(record.addedNodes[j]);
        }
      }
    }
  }).observe(document.documentElement, {childList: true, subtree: true, attributes: true, attributeFilter: [ATTR]});
})();
