/** The run-set file's shapes (`membit.runset/1`), Node-free so the report view's build can use them. */

/** One rank as the run-set file records it. */
export interface RunSetRank {
  rank: number;
  /** The report, relative to the run-set file's folder (posix separators); null when the rank wrote none. */
  report: string | null;
  status: 'ok' | 'oom' | 'error' | 'cancelled' | 'missing';
}

/** The run-set file (`membit.runset/1`): all ranks of one job, each with its report. */
export interface RunSetDoc {
  schema: 'membit.runset/1';
  id: string;
  launcher: 'torchrun' | 'slurm';
  started: string;
  world_size: number;
  script: string;
  argv: string[];
  variant: string;
  /** The job's own outcome (torchrun's exit, SLURM's state), in words. */
  status: 'ok' | 'failed' | 'cancelled';
  message: string | null;
  ranks: RunSetRank[];
  /** SLURM: the job id and the login node it was submitted through. */
  slurm?: { job: string; host: string; state: string | null };
}

