/**
 * Where each measured dropout or mask site is in the code as it is now, and whether it
 * has been converted since the run: the report view's sites table follows edits and stops
 * offering Convert for a site that already uses Membit's replacement. Pure.
 */

export interface SiteState {
  /** The site's line now (1-based); null when its text was deleted since the run. */
  line: number | null;
  /** The line now that built the site's module (1-based), when the report names one. */
  built: number | null;
  /** The site's module is now built, or its call now made, with Membit's replacement. */
  converted: boolean;
  /** The file's text differs from the text that ran. */
  edited: boolean;
}

/** One file as it is now, seen through the report's line mapping. */
export interface FileNow {
  /** Where a 1-based report line is now (1-based); undefined when its text is gone. */
  current(reportLine: number): number | undefined;
  /** 1-based lines now calling one of Membit's replacements. */
  converted: ReadonlySet<number>;
  edited: boolean;
}

export interface SiteRef {
  file: string;
  line: number;
  /** The 1-based report line that built the site's module, if the report says. */
  builtAt?: number | undefined;
}

export function siteStates(sites: readonly SiteRef[], fileNow: (file: string) => FileNow | undefined): SiteState[] {
  return sites.map((s) => {
    const f = fileNow(s.file);
    if (!f) return { line: s.line, built: s.builtAt ?? null, converted: false, edited: false };
    const line = f.current(s.line) ?? null;
    const built = s.builtAt === undefined ? null : (f.current(s.builtAt) ?? null);
    const converted = (built !== null && f.converted.has(built)) || (line !== null && f.converted.has(line));
    return { line, built, converted, edited: f.edited };
  });
}
