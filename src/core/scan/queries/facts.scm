; Facts the scanner reads from each top-level statement (or class-body statement).
; The queries only find candidates; which calls are sites depends on the file's
; imports (`from torch.nn import Dropout as D` makes `D(0.1)` one), so names are
; resolved afterwards, in TypeScript (src/core/scan/facts.ts, analyze.ts).

; Every call. Strings and comments hold no `call` nodes, so text such as
; "nn.Dropout(0.1)" in a docstring never matches.
(call
  function: (_) @call.callee
  arguments: (_) @call.args) @call

; Assignments: bindings that shadow imported names, attention-probability flow
; (`att = F.softmax(att)` then `self.attn_dropout(att)`), and literal config values.
(assignment
  left: (_) @assign.left
  right: (_) @assign.right) @assign

(function_definition
  name: (identifier) @func.name
  parameters: (parameters) @func.params) @func

(class_definition
  name: (identifier) @class.name) @class

(import_statement) @import
(import_from_statement) @import

; Literal numbers that may give a shape: `def __init__(self, hidden_size=768)` and
; `GPTConfig(n_embd=768)`. Field defaults (`n_embd: int = 768`) come from assignments.
(default_parameter
  name: (identifier) @param.name
  value: [(integer) (float)] @param.value)
(typed_default_parameter
  name: (identifier) @param.name
  value: [(integer) (float)] @param.value)
(keyword_argument
  name: (identifier) @kwarg.name
  value: [(integer) (float)] @kwarg.value)

; The memory advisor. `@` products (attention scores and outputs); for-loops (block
; loops that activation checkpointing would cover); the string "eager" and the
; keywords that choose attention, precision or checkpointing; `_attn_implementation`,
; which HF modeling code reads to pick its attention at run time.
(binary_operator
  left: (_) @mm.left
  operator: "@"
  right: (_) @mm.right) @mm

(for_statement
  left: (_) @for.left
  right: (_) @for.right) @for

((string) @eager.str
  (#match? @eager.str "^[rRuU]?[\"']eager[\"']$"))

(keyword_argument
  name: (identifier) @akw.name
  value: (_) @akw.value
  (#match? @akw.name "^(attn_implementation|mixed_precision|precision|fp16|bf16|torch_dtype|dtype|gradient_checkpointing)$"))

(attribute
  attribute: (identifier) @dispatch.attr
  (#eq? @dispatch.attr "_attn_implementation"))
