/* The overview's panels are mounted the first time the overview is shown (see eval_viewer/app/layout.py).
 *
 * This decides when, in the browser: it answers ``true`` once, when the overview's ``hidden`` first turns false, and
 * nothing otherwise, so the server is asked for the panels once and a step through datapoints (which sets ``hidden``
 * again each time) costs no request. ``hidden`` is unset until the URL has been read, which is neither.
 */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  evalViewer: Object.assign({}, (window.dash_clientside || {}).evalViewer, {
    overviewShown: function (hidden, shown) {
      if (hidden !== false || shown) {
        return window.dash_clientside.no_update;
      }
      return true;
    },
  }),
});
