import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface Line {
  label: string;
  color: string;
}

// A time chart: x in Unix seconds, one y array per line (null: no point).
export function Chart(props: { title: string; lines: Line[]; data: (number | null)[][]; unit?: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    if (!box.current) return;
    const width = () => Math.max(240, (box.current?.clientWidth ?? 320) - 8);
    plot.current = new uPlot(
      {
        title: props.title,
        width: width(),
        height: 180,
        series: [{}, ...props.lines.map((l) => ({ label: l.label, stroke: l.color, width: 2, spanGaps: false }))],
        axes: [{}, { values: (_u, vals) => vals.map((v) => (v == null ? '' : v + (props.unit ?? ''))), size: 60 }],
        legend: { live: false },
      },
      props.data as uPlot.AlignedData,
      box.current,
    );
    const resize = () => plot.current?.setSize({ width: width(), height: 180 });
    window.addEventListener('resize', resize);
    return () => {
      window.removeEventListener('resize', resize);
      plot.current?.destroy();
      plot.current = null;
    };
  }, [props.lines.map((l) => l.label).join('|')]);
  useEffect(() => {
    plot.current?.setData(props.data as uPlot.AlignedData);
  }, [props.data]);
  return <div class="chart" ref={box} />;
}
