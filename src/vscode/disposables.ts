/**
 * Whatever has `dispose()`. VS Code declares `Disposable` as a class, but hands out decoration
 * types, emitters and collections that are not its instances; lists of what a feature owns
 * hold this instead, as `ExtensionContext.subscriptions` does.
 */
export interface DisposableLike {
  dispose(): unknown;
}
