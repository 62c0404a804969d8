/* The failure table's one piece of browser-side logic: start over when the run, epoch or metric changes.
 *
 * The table uses AG Grid's infinite row model, whose datasource asks the server for one block of rows at a time and
 * keeps the blocks it got. Those blocks belong to the selection they were asked under, so a new selection empties the
 * cache (the grid then asks again, from the server callback that reads the new selection) and the returned
 * ``scrollTo`` brings the view back to the top, where the worst datapoints are. The grid's id comes in as an argument,
 * so this file knows no component ids.
 */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  evalViewer: Object.assign({}, (window.dash_clientside || {}).evalViewer, {
    refreshTable: async function (selection, gridId) {
      if (!selection) {
        return window.dash_clientside.no_update;
      }
      const api = await window.dash_ag_grid.getApiAsync(gridId);
      api.purgeInfiniteCache();
      return {rowIndex: 0, rowPosition: "top"};
    },
  }),
});
