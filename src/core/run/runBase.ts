import type { RunEvent, RunOutcome } from './target';

/**
 * What every kind of run (ProfileRun, SlurmRun) shares with its callers: subscribing to
 * events, and a start() that runs the work once. The UI and the CLI drive both kinds
 * through this surface, so it lives in one place.
 */
export abstract class RunBase {
  private readonly listeners = new Set<(e: RunEvent) => void>();
  private promise?: Promise<RunOutcome>;

  /** Subscribes to the run's events; returns the unsubscribe function. */
  onEvent(listener: (e: RunEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Starts the run (once); the promise never rejects, failures are outcomes. */
  start(): Promise<RunOutcome> {
    this.promise ??= this.execute();
    return this.promise;
  }

  /** The run itself; called once, by start(). */
  protected abstract execute(): Promise<RunOutcome>;

  protected emit(e: RunEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        // A listener's bug must not break the run or its clean-up.
      }
    }
  }

  protected log(message: string, notice = false): void {
    this.emit(notice ? { type: 'log', message, notice } : { type: 'log', message });
  }
}
