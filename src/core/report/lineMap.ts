/**
 * Keeps report lines on the right source lines while the user edits after a run.
 * Lines whose text was deleted are dropped rather than pinned to a neighbour.
 */

/** One text change, in 0-based document coordinates (as VS Code reports them). */
export interface TextChange {
  startLine: number;
  startCol: number;
  endLine: number;
  endCol: number;
  /** The inserted text. */
  text: string;
}

export class LineMapper {
  /** report line (0-based) → current line (0-based); absent when deleted. */
  private readonly map = new Map<number, number>();

  constructor(lines: Iterable<number>) {
    for (const l of lines) this.map.set(l, l);
  }

  /** Applies changes in the order VS Code reports them for one edit event. */
  apply(changes: readonly TextChange[]): void {
    // Later changes first, so earlier ranges are still in the coordinates they were given in.
    const ordered = [...changes].sort((a, b) => b.startLine - a.startLine || b.startCol - a.startCol);
    for (const c of ordered) this.applyOne(c);
  }

  private applyOne(c: TextChange): void {
    const added = (c.text.match(/\n/g) ?? []).length;
    const delta = added - (c.endLine - c.startLine);
    for (const [orig, cur] of this.map) {
      if (cur < c.startLine) continue;
      if (cur > c.endLine) {
        this.map.set(orig, cur + delta);
        continue;
      }
      if (c.startLine === c.endLine) {
        // A pure insertion at the start of a line pushes that line down; any other
        // change inside one line edits it in place.
        const insertsAbove = c.startCol === 0 && c.endCol === 0 && c.text.endsWith('\n');
        if (insertsAbove) this.map.set(orig, cur + added);
        continue;
      }
      if (cur === c.startLine) {
        // The line survives only if some of its text before the change remains.
        if (c.startCol === 0) this.map.delete(orig);
        continue;
      }
      if (cur === c.endLine && c.endCol === 0) {
        // Its whole text survives, now after the inserted lines.
        this.map.set(orig, c.startLine + added);
        continue;
      }
      this.map.delete(orig);
    }
  }

  /** Current line of a report line, or undefined if its text is gone. */
  current(reportLine: number): number | undefined {
    return this.map.get(reportLine);
  }

  /** The report line now at `line` (0-based both), or undefined. */
  reportLineAt(line: number): number | undefined {
    for (const [orig, cur] of this.map) if (cur === line) return orig;
    return undefined;
  }

  entries(): [number, number][] {
    return [...this.map.entries()];
  }
}
