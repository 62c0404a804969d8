/* Foldable debug items: a click on an item's head opens or folds it, and the choice is remembered.
 *
 * The app draws a debug item only while it is open (a closed one costs the browser its head only). Which items are
 * open is a list of item keys in a dcc.Store kept in local storage, so it holds from datapoint to datapoint, across
 * passes and runs (the keys name items by debugger and item key, not by position) and across reloads. This function
 * only toggles the clicked key in that list; the server callback listening to the store draws or empties the items
 * whose state changed. The key comes in the clicked head's pattern-matching id, so this file knows no component ids.
 */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  evalViewer: Object.assign({}, (window.dash_clientside || {}).evalViewer, {
    toggleItem: function (clicks, opened) {
      const context = window.dash_clientside.callback_context;
      const trigger = context.triggered_id;
      const fired = context.triggered.length > 0 && Boolean(context.triggered[0].value);
      if (!trigger || !fired) {
        return window.dash_clientside.no_update;  // heads of a newly drawn datapoint, not a click
      }
      const keys = Array.isArray(opened) ? opened.filter(function (k) { return typeof k === "string"; }) : [];
      const at = keys.indexOf(trigger.item);
      if (at >= 0) {
        keys.splice(at, 1);
      } else {
        keys.push(trigger.item);
      }
      return keys;
    },
  }),
});
