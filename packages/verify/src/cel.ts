import { type ASTNode, Environment } from '@marcbachmann/cel-js';
import { TesseraError } from '@tessera/core';

/**
 * Conditions over claims are written in CEL (Common Expression Language): a small, non-Turing-complete
 * language with no I/O, no loops beyond bounded macros, and a type checker. Expressions are compiled
 * once (at startup) and evaluated per request.
 *
 * Differences from full CEL, on purpose:
 * - `glob(pattern, value)` is available: `*` matches any run of characters (including none, and
 *   including `/` and `:`), `?` exactly one character; nothing else is special. It runs in
 *   O(pattern × value) time at worst with no backtracking blow-up.
 * - `string.matches(regex)` is **disabled**: JavaScript regular expressions backtrack, and a pattern
 *   such as `(a+)+$` against a claim an attacker controls would stall the event loop (ReDoS).
 *   Compiling an expression that calls it fails with a message pointing at `glob()`.
 * - Expressions are capped at {@link CEL_MAX_LENGTH} characters, 512 AST nodes and depth 32.
 *
 * @see https://github.com/google/cel-spec/blob/master/doc/langdef.md
 */

/** Longest CEL expression accepted, in characters. */
export const CEL_MAX_LENGTH = 4096;

/** Options for {@link compileCel}. */
export interface CompileCelOptions {
  /**
   * The variables the expression may reference. When given, any other identifier is an error at
   * compile time (so a typo in a claim name fails at startup, not per request). When omitted, any
   * identifier is accepted and resolved from the evaluation context.
   */
  variables?: string[];
}

/** A compiled CEL expression. */
export interface CompiledCel {
  /** The source text, as given. */
  readonly expression: string;
  /**
   * Identifiers the expression references (variables, and macro-bound names such as `t` in
   * `tags.exists(t, …)`): callers can build the evaluation context from just these.
   */
  readonly references: readonly string[];
  /**
   * Evaluates the expression over `vars`. Integers in the result come back as `bigint` (CEL `int`);
   * callers that want a boolean should compare with `=== true`.
   * @throws {CelError} `ERR_CEL_EVALUATION` when evaluation fails (missing key, no matching overload…)
   */
  evaluate(vars: Record<string, unknown>): unknown;
}

/** A CEL expression that does not compile (`ERR_CEL_INVALID`) or fails while evaluating (`ERR_CEL_EVALUATION`). */
export class CelError extends TesseraError {
  /** The expression that failed. */
  readonly expression: string;
  constructor(code: 'ERR_CEL_INVALID' | 'ERR_CEL_EVALUATION', expression: string, problem: string, options: { cause?: unknown } = {}) {
    super(code, `${code === 'ERR_CEL_INVALID' ? 'invalid' : 'cannot evaluate'} CEL expression ${quote(expression)}: ${problem}`, {
      ...(options.cause === undefined ? {} : { cause: options.cause }),
      details: { expression },
    });
    this.expression = expression;
  }
}

/**
 * Matches `value` against a glob `pattern` where `*` is any run of characters (possibly empty) and
 * `?` is exactly one character (a Unicode code point). No other character is special, and there is
 * no escape: a literal `*` in a claim is matched by `*` or `?`.
 *
 * The classic two-pointer algorithm: on a mismatch after a `*`, resume from the last `*` only — never
 * from earlier ones — so there is no exponential backtracking; worst case O(|pattern| × |value|).
 *
 * @example glob('repo:acme/*:ref:refs/heads/main', sub) // GitHub-style subject pinning
 */
export function glob(pattern: string, value: string): boolean {
  // Work on code points only when a surrogate is present, so `?` means one character everywhere
  // without paying for an array copy in the common (BMP) case.
  if (hasSurrogate(pattern) || hasSurrogate(value)) return globArray(Array.from(pattern), Array.from(value));
  const p = pattern;
  const s = value;
  let pi = 0;
  let si = 0;
  let star = -1;
  let mark = 0;
  while (si < s.length) {
    const pc = p.charCodeAt(pi);
    if (pi < p.length && (pc === 63 /* ? */ || pc === s.charCodeAt(si))) {
      pi++;
      si++;
    } else if (pi < p.length && pc === 42 /* * */) {
      star = pi++;
      mark = si;
    } else if (star !== -1) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.length && p.charCodeAt(pi) === 42) pi++;
  return pi === p.length;
}

function globArray(p: string[], s: string[]): boolean {
  let pi = 0;
  let si = 0;
  let star = -1;
  let mark = 0;
  while (si < s.length) {
    const pc = p[pi];
    if (pi < p.length && (pc === '?' || pc === s[si])) {
      pi++;
      si++;
    } else if (pi < p.length && pc === '*') {
      star = pi++;
      mark = si;
    } else if (star !== -1) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.length && p[pi] === '*') pi++;
  return pi === p.length;
}

const SURROGATE = /[\uD800-\uDFFF]/;
function hasSurrogate(s: string): boolean {
  return SURROGATE.test(s);
}

const LIMITS = { maxAstNodes: 512, maxDepth: 32, maxListElements: 256, maxMapEntries: 256, maxCallArguments: 8 };

function baseEnvironment(opts: ConstructorParameters<typeof Environment>[0]): Environment {
  return new Environment(opts).registerFunction('glob(string, string): bool', (pattern: string, value: string) => glob(pattern, value), {
    description: 'glob(pattern, value): `*` any run of characters, `?` one character',
  });
}

// One environment per distinct variable list: building an Environment is the expensive part.
let dynEnv: Environment | undefined;
const declaredEnvs = new Map<string, Environment>();

function environmentFor(variables: string[] | undefined): Environment {
  if (!variables) {
    dynEnv ??= baseEnvironment({ unlistedVariablesAreDyn: true, limits: LIMITS });
    return dynEnv;
  }
  const key = [...new Set(variables)].sort().join('\0');
  let env = declaredEnvs.get(key);
  if (!env) {
    env = baseEnvironment({ unlistedVariablesAreDyn: false, limits: LIMITS });
    for (const name of new Set(variables)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
        throw new CelError('ERR_CEL_INVALID', name, `"${name}" cannot be a CEL variable name (letters, digits, _)`);
      }
      env.registerVariable(name, 'dyn');
    }
    if (declaredEnvs.size > 64) declaredEnvs.clear();
    declaredEnvs.set(key, env);
  }
  return env;
}

/**
 * Compiles a CEL expression once, for evaluation many times.
 *
 * @example
 * const rule = compileCel('glob("ws:default:deployment:*:env:prod", sub) && run_attempt <= 3', {
 *   variables: ['sub', 'run_attempt'],
 * });
 * rule.evaluate({ sub: 'ws:default:deployment:etl:env:prod', run_attempt: 1 }); // true
 * @throws {CelError} `ERR_CEL_INVALID` naming the problem: syntax, unknown variable, type error,
 *   a disabled function (`matches`), or an expression over the size limits.
 */
export function compileCel(expression: string, options: CompileCelOptions = {}): CompiledCel {
  if (typeof expression !== 'string' || expression.trim() === '') {
    throw new CelError('ERR_CEL_INVALID', String(expression), 'the expression is empty');
  }
  if (expression.length > CEL_MAX_LENGTH) {
    throw new CelError('ERR_CEL_INVALID', expression, `longer than ${CEL_MAX_LENGTH} characters`);
  }
  const env = environmentFor(options.variables);
  let program: ReturnType<Environment['parse']>;
  try {
    program = env.parse(expression);
  } catch (e) {
    throw new CelError('ERR_CEL_INVALID', expression, celProblem(e), { cause: e });
  }
  const disabled = findDisabledCall(program.ast);
  if (disabled) {
    throw new CelError(
      'ERR_CEL_INVALID',
      expression,
      `${disabled}() is disabled: regular expressions can backtrack catastrophically on attacker-controlled claims; use glob(pattern, value) with * and ?`,
    );
  }
  const checked = program.check();
  if (!checked.valid) {
    const known = options.variables ? `; known variables: ${options.variables.join(', ')}` : '';
    throw new CelError('ERR_CEL_INVALID', expression, `${celProblem(checked.error)}${known}`, { cause: checked.error });
  }
  return Object.freeze({
    expression,
    references: Object.freeze(collectIdentifiers(program.ast)),
    evaluate(vars: Record<string, unknown>): unknown {
      try {
        return program(vars);
      } catch (e) {
        throw new CelError('ERR_CEL_EVALUATION', expression, celProblem(e), { cause: e });
      }
    },
  });
}

const DISABLED = new Set(['matches']);

/** Visits every `{ op, args }` node of a cel-js AST (iteratively: deep expressions cannot overflow the stack). */
function walkAst(root: ASTNode, visit: (op: string, args: unknown) => void): void {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (Array.isArray(node)) {
      for (const n of node) stack.push(n);
      continue;
    }
    if (!node || typeof node !== 'object' || !('op' in node)) continue;
    const { op, args } = node as { op: string; args: unknown };
    visit(op, args);
    if (args && typeof args === 'object') stack.push(args);
  }
}

function findDisabledCall(root: ASTNode): string | undefined {
  let found: string | undefined;
  walkAst(root, (op, args) => {
    if ((op === 'call' || op === 'rcall') && Array.isArray(args) && typeof args[0] === 'string' && DISABLED.has(args[0])) found ??= args[0];
  });
  return found;
}

function collectIdentifiers(root: ASTNode): string[] {
  const out = new Set<string>();
  walkAst(root, (op, args) => {
    if (op === 'id' && typeof args === 'string') out.add(args);
  });
  return [...out];
}

/** The first line of a cel-js error (the rest is a source excerpt with a caret). */
function celProblem(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  const first = (message.split('\n')[0] ?? message).trim();
  const range = (e as { range?: { start?: unknown } } | null)?.range;
  return typeof range?.start === 'number' ? `${first} (at column ${range.start + 1})` : first;
}

function quote(expression: string): string {
  return JSON.stringify(expression.length > 200 ? `${expression.slice(0, 200)}…` : expression);
}
