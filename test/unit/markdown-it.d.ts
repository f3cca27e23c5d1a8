// The part of markdown-it (a dependency of @vscode/vsce) the tests use to render hover Markdown.
declare module 'markdown-it' {
  export default class MarkdownIt {
    render(src: string): string;
    renderInline(src: string): string;
  }
}
