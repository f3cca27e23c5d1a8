/**
 * The states of one profiling run, shared by local and SSH targets:
 *
 *   idle → preparing → uploading → running → collecting → done
 *                 ╰──────────────────╯  (local runs skip uploading)
 *   any state before the end → failed | cancelled
 *
 * A run moves only forward; an impossible move is a bug and throws, so the UI can
 * trust that `done` came after `collecting` and never after `failed`.
 */

export type RunState = 'idle' | 'preparing' | 'uploading' | 'running' | 'collecting' | 'done' | 'failed' | 'cancelled';
export type FinalRunState = Extract<RunState, 'done' | 'failed' | 'cancelled'>;

export const RUN_TRANSITIONS: Readonly<Record<RunState, readonly RunState[]>> = {
  idle: ['preparing', 'failed', 'cancelled'],
  preparing: ['uploading', 'running', 'failed', 'cancelled'],
  uploading: ['running', 'failed', 'cancelled'],
  running: ['collecting', 'failed', 'cancelled'],
  collecting: ['done', 'failed', 'cancelled'],
  done: [],
  failed: [],
  cancelled: [],
};

export function isFinal(s: RunState): s is FinalRunState {
  return RUN_TRANSITIONS[s].length === 0;
}

export class RunStateMachine {
  private current: RunState = 'idle';
  private readonly listeners = new Set<(to: RunState, from: RunState, detail?: string) => void>();

  get state(): RunState {
    return this.current;
  }

  /** Moves to `next`; throws on a move the table does not allow. */
  to(next: RunState, detail?: string): void {
    const from = this.current;
    if (!RUN_TRANSITIONS[from].includes(next)) throw new Error(`run state cannot go from ${from} to ${next}`);
    this.current = next;
    for (const l of this.listeners) l(next, from, detail);
  }

  onChange(l: (to: RunState, from: RunState, detail?: string) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}
