import { readFileSync } from 'node:fs';
import { relative, resolve, sep } from 'node:path';
import { type ErrorCode, TesseraError, ValidationError, type ValidationIssue } from '@tessera/core';
import { type Document, isAlias, isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from 'yaml';
import type * as z from 'zod';

/** A step in a field path: a mapping key or a list index. */
export type PathSegment = string | number;

/** Where something is in a source file; line and column are 1-based. */
export interface SourceLocation {
  /** The file as shown to people: relative to the working directory when inside it. */
  file: string;
  line: number;
  column: number;
}

/** A validation issue that also says where it is. `path` is formatted (`deployments[1].schedule.cron`). */
export interface LocatedIssue extends ValidationIssue, SourceLocation {}

/** A parsed YAML file that remembers where every node came from. */
export interface YamlSource {
  /** Absolute path. */
  readonly path: string;
  /** Path as shown in messages. */
  readonly displayName: string;
  /** The plain data (`null` for an empty file). */
  readonly data: unknown;
  /**
   * The location of the node at `path`, or of its nearest ancestor that exists in the file.
   * With `key: true`, the location of the mapping key itself (for unknown keys).
   */
  locate(path: readonly PathSegment[], options?: { key?: boolean }): SourceLocation;
}

/** Formats a field path the way people write it: `deployments[1].schedule.cron`. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${seg}` : seg;
  }
  return out;
}

/** One line of a config error: `tessera.yaml:14:5  deployments[1].schedule.cron: … `. */
export function formatIssueLine(issue: LocatedIssue): string {
  return `${issue.file}:${issue.line}:${issue.column}  ${issue.path ? `${issue.path}: ` : ''}${issue.message}`;
}

/** How a file is named in messages: relative to `cwd` when inside it, else absolute. */
export function displayPath(path: string, cwd = process.cwd()): string {
  const rel = relative(cwd, path);
  return rel && !rel.startsWith(`..${sep}`) && rel !== '..' && !rel.startsWith(sep) ? rel : path;
}

/**
 * Reads and parses a YAML file, keeping positions.
 * @throws ValidationError `code` (default `ERR_CONFIG`) when the file is missing or is not valid YAML.
 */
export function readYamlSource(path: string, options: { code?: ErrorCode; cwd?: string; text?: string } = {}): YamlSource {
  const code = options.code ?? 'ERR_CONFIG';
  const abs = resolve(options.cwd ?? process.cwd(), path);
  const displayName = displayPath(abs, options.cwd);
  let text = options.text;
  if (text === undefined) {
    try {
      text = readFileSync(abs, 'utf8');
    } catch (e) {
      const reason = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be read (${(e as Error).message})`;
      throw new TesseraError(code, `${displayName} ${reason}`, { cause: e, details: { file: abs } });
    }
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, merge: true, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number): SourceLocation => {
    const pos = lineCounter.linePos(offset);
    return { file: displayName, line: pos.line, column: pos.col };
  };
  if (doc.errors.length > 0) {
    const issues: LocatedIssue[] = doc.errors.map((err) => ({
      ...at(err.pos[0]),
      path: '',
      message: `invalid YAML: ${firstLine(err.message)}`,
    }));
    throw locatedError(code, displayName, issues);
  }
  const data: unknown = doc.toJS({ maxAliasCount: 1000 });
  return Object.freeze({
    path: abs,
    displayName,
    data,
    locate(p: readonly PathSegment[], opts: { key?: boolean } = {}): SourceLocation {
      return at(findOffset(doc, p, opts.key === true));
    },
  });
}

function firstLine(s: string): string {
  return (s.split('\n')[0] ?? s).replace(/ at line \d+, column \d+:?$/, '');
}

function findOffset(doc: Document.Parsed, path: readonly PathSegment[], wantKey: boolean): number {
  let node: unknown = doc.contents;
  let offset = nodeStart(node) ?? 0;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i] as PathSegment;
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return offset;
      const keyStart = nodeStart(pair.key);
      if (i === path.length - 1 && wantKey && keyStart !== undefined) return keyStart;
      const valueStart = nodeStart(pair.value);
      // `key:` with no value: point at the key.
      if (valueStart === undefined || (isScalar(pair.value) && pair.value.value === null && pair.value.source === undefined)) {
        return keyStart ?? offset;
      }
      offset = valueStart;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      const start = nodeStart(item);
      if (start === undefined) return offset;
      offset = start;
      node = item;
    } else {
      return offset;
    }
  }
  return offset;
}

function nodeStart(node: unknown): number | undefined {
  const range = (node as Node | null | undefined)?.range;
  return range ? range[0] : undefined;
}

/** Builds the error thrown for located issues: the message lists every issue, one per line, in file order. */
export function locatedError(code: ErrorCode, file: string, issues: LocatedIssue[]): ValidationError {
  const sorted = [...issues].sort((a, b) => a.line - b.line || a.column - b.column);
  const n = sorted.length;
  const head = `${file}: ${n} problem${n === 1 ? '' : 's'}`;
  return new ValidationError(`${head}\n${sorted.map(formatIssueLine).join('\n')}`, sorted, code);
}

/** An issue to locate: a field path, a message, and whether it is about the key itself. */
export interface PendingIssue {
  path: readonly PathSegment[];
  message: string;
  key?: boolean;
}

/** Locates issues against a source. */
export function locateIssues(source: YamlSource, issues: readonly PendingIssue[]): LocatedIssue[] {
  return issues.map((i) => ({ ...source.locate(i.path, { key: i.key === true }), path: formatPath(i.path), message: i.message }));
}

/**
 * Validates the data of a YAML source with a zod schema. Issues are translated into plain-language
 * messages (see {@link describeZodIssue}) and located; unknown keys point at the key.
 */
export function validateYaml<S extends z.ZodType>(
  source: YamlSource,
  schema: S,
  extra: readonly PendingIssue[] = [],
  code: ErrorCode = 'ERR_CONFIG',
): z.output<S> {
  const result = schema.safeParse(source.data, { error: describeZodIssue });
  const pending: PendingIssue[] = [...extra];
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = issue.path.filter((s): s is string | number => typeof s !== 'symbol');
      if (issue.code === 'unrecognized_keys') {
        // One message line per key, in key order (see `strictObject` in schema.ts).
        const lines = issue.message.split('\n');
        issue.keys.forEach((k, i) => {
          pending.push({ path: [...path, k], message: lines[i] ?? `unknown key "${k}"`, key: true });
        });
      } else {
        pending.push({ path, message: issue.message });
      }
    }
  }
  const unique = dedupe(pending);
  if (unique.length > 0) throw locatedError(code, source.displayName, locateIssues(source, unique));
  return (result as { data: z.output<S> }).data;
}

function dedupe(issues: PendingIssue[]): PendingIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${formatPath(i.path)}\u0000${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

const EXPECTED: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  map: 'a mapping',
  array: 'a list',
  null: 'null',
};

/** Describes a value the way it appears in YAML, for "found …" in messages. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'an empty value (null)';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (typeof v === 'number') return Number.isInteger(v) ? `the number ${v}` : `the number ${v}`;
  return String(v);
}

/**
 * The per-parse zod error map: plain-language messages that say what was expected and what was
 * found. Schema-level messages (custom checks, unknown keys) take precedence over this.
 */
export function describeZodIssue(iss: z.core.$ZodRawIssue): string | undefined {
  switch (iss.code) {
    case 'invalid_type': {
      if (iss.input === undefined) return 'is required';
      const expected = EXPECTED[iss.expected] ?? iss.expected;
      return `expected ${expected}, found ${describeValue(iss.input)}`;
    }
    case 'too_small': {
      const min = Number(iss.minimum);
      if (iss.origin === 'array') return min === 1 ? 'must not be empty' : `must have at least ${min} items`;
      if (iss.origin === 'string') return min === 1 ? 'must not be empty' : `must be at least ${min} characters`;
      return `must be ${iss.inclusive ? 'at least' : 'greater than'} ${min}, found ${String(iss.input)}`;
    }
    case 'too_big': {
      const max = Number(iss.maximum);
      if (iss.origin === 'array') return `must have at most ${max} items`;
      if (iss.origin === 'string') return `must be at most ${max} characters`;
      return `must be ${iss.inclusive ? 'at most' : 'less than'} ${max}, found ${String(iss.input)}`;
    }
    case 'invalid_key':
      return iss.issues[0]?.message ?? `invalid key ${JSON.stringify(iss.input)}`;
    case 'invalid_value':
      return `expected one of ${iss.values.map((v) => JSON.stringify(v)).join(', ')}, found ${describeValue(iss.input)}`;
    default:
      return undefined;
  }
}
