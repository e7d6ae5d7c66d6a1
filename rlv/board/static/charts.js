// rlv board's two charts, drawn with BokehJS's plotting API from the JSON of rlv/board/charts.py.
// A chart whose shape (levels, lines, panels) is the one on the page gets its new numbers (of
// this or another metric) put into its data sources, so the plot keeps what the user zoomed and
// nothing is built again; another shape is drawn anew.
"use strict";

window.rlvCharts = (() => {
  const shown = {};  // target id -> {key, sources, yRange, yData}
  const TOOLS = "pan,wheel_zoom,box_zoom,reset,save";
  const nan = (values) => values.map((v) => (v === null ? NaN : v));  // Bokeh's "no value"
  const rows = (items, n) => Array.from({length: Math.ceil(items.length / n)},
    (_, r) => items.slice(r * n, r * n + n));

  function seriesData(s) {
    return {x: s.x, cell: s.cell, mean: nan(s.mean), lower: nan(s.lower), upper: nan(s.upper),
            n: s.n};
  }

  function curveData(c) {
    return {epoch: c.epoch, mean: c.mean, low: c.low, high: c.high, seeds: c.seeds};
  }

  async function show(target, key, layout, state) {
    const el = document.getElementById(target);
    el.innerHTML = "";
    await Bokeh.Plotting.show(layout, el);
    shown[target] = {key, ...state};
  }

  // The interval ends set the y range (Bokeh's automatic range sees the means, not whiskers);
  // it is set again only when the numbers move, so a zoom holds between polls.
  function setRange(state, span) {
    if (!span || JSON.stringify(span) === JSON.stringify(state.yData)) return;
    state.yRange.start = span[0];
    state.yRange.end = span[1];
    state.yData = span;
  }

  async function interaction(target, chart) {
    const key = JSON.stringify([chart.x_levels, chart.lines, chart.panels.map((p) => p.title)]);
    const old = shown[target];
    if (old && old.key === key) {
      chart.panels.forEach((panel, p) => panel.series.forEach((s, k) => {
        old.sources[p][k].data = seriesData(s);
      }));
      old.yAxis.axis_label = chart.y_label;
      setRange(old, chart.y_range);
      return;
    }
    const el = document.getElementById(target);
    const columns = Math.min(chart.panels.length, 3);
    const width = Math.max(300, Math.floor((el.clientWidth - 120) / columns));
    const yRange = new Bokeh.Range1d({start: chart.y_range ? chart.y_range[0] : 0,
                                      end: chart.y_range ? chart.y_range[1] : 1});
    const spread = chart.lines.length > 1 ? 0.5 / chart.lines.length : 0;
    const sources = [];
    const figures = chart.panels.map((panel, p) => {
      const fig = Bokeh.Plotting.figure({
        title: panel.title || null, width, height: 340, x_range: chart.x_levels, y_range: yRange,
        tools: TOOLS, x_axis_label: chart.x_factor, y_axis_label: p === 0 ? chart.y_label : null,
      });
      const items = [];
      sources.push(panel.series.map((s, k) => {
        const colour = chart.colours[k];
        const source = new Bokeh.ColumnDataSource({data: seriesData(s)});
        // lines side by side at each x level, their intervals apart
        const x = {field: "x", transform: new Bokeh.Dodge({
          value: (k - (chart.lines.length - 1) / 2) * spread, range: fig.x_range})};
        const line = fig.line(x, {field: "mean"}, {source, line_color: colour, line_width: 2});
        const dots = fig.scatter(x, {field: "mean"}, {source, size: 8, fill_color: colour,
                                                      line_color: colour});
        fig.add_layout(new Bokeh.Whisker({source, base: x, lower: {field: "lower"},
                                          upper: {field: "upper"}, line_color: colour}));
        fig.add_tools(new Bokeh.HoverTool({renderers: [dots], tooltips: [
          ["cell", "@cell"], ["mean", "@mean{0.0000}"],
          ["95% interval", "@lower{0.000} to @upper{0.000}"], ["n", "@n"]]}));
        items.push(new Bokeh.LegendItem({label: `${chart.line_factor} = ${s.line}`,
                                         renderers: [line, dots]}));
        return source;
      }));
      if (chart.line_factor && p === chart.panels.length - 1) {
        fig.add_layout(new Bokeh.Legend({items, location: "top_left"}), "right");
      }
      return fig;
    });
    await show(target, key, Bokeh.Plotting.gridplot(rows(figures, columns),
                                                    {toolbar_location: "right"}),
               {sources, yRange, yData: chart.y_range, yAxis: figures[0].yaxes[0]});
  }

  async function curves(target, chart) {
    const key = JSON.stringify(chart.cells.map((c) => c.name));
    const old = shown[target];
    if (old && old.key === key) {
      chart.cells.forEach((c, k) => { old.sources[k].data = curveData(c); });
      old.ticker.interval = chart.epoch_step;
      return;
    }
    const el = document.getElementById(target);
    const columns = Math.min(chart.cells.length, 6);
    const width = Math.max(180, Math.floor((el.clientWidth - 60) / columns));
    const ticker = new Bokeh.SingleIntervalTicker({interval: chart.epoch_step,
                                                   num_minor_ticks: 0});
    let yRange = null;  // shared: the cells compare on one scale
    const sources = chart.cells.map((c) => new Bokeh.ColumnDataSource({data: curveData(c)}));
    const figures = chart.cells.map((c, k) => {
      const fig = Bokeh.Plotting.figure({title: c.name, width, height: 190, tools: TOOLS,
                                         ...(yRange ? {y_range: yRange} : {})});
      yRange = yRange || fig.y_range;
      fig.xaxes[0].ticker = ticker;
      fig.varea({x: {field: "epoch"}, y1: {field: "low"}, y2: {field: "high"},
                 source: sources[k], fill_color: "#1f77b4", fill_alpha: 0.2});
      const line = fig.line({field: "epoch"}, {field: "mean"}, {source: sources[k],
                                                                line_color: "#1f77b4"});
      fig.add_tools(new Bokeh.HoverTool({renderers: [line], mode: "vline", tooltips: [
        ["epoch", "@epoch"], ["mean", "@mean{0.000}"], ["seeds' range", "@low{0.000} to @high{0.000}"],
        ["seeds", "@seeds"]]}));
      return fig;
    });
    await show(target, key, Bokeh.Plotting.gridplot(rows(figures, columns),
                                                    {toolbar_location: "right"}),
               {sources, ticker});
  }

  return {interaction, curves};
})();
