/**
 * Strict JSON for JOSE headers and claim sets: `JSON.parse` keeps the LAST of duplicate members,
 * other parsers keep the first, so a token with `"sub"` twice can mean one thing to this service
 * and another to the one behind it. RFC 7515 §5.2 and RFC 7519 §4 allow refusing such input, and
 * we do.
 *
 * Detection without a hand-written parser: outside strings, a `:` appears in JSON only between a
 * member name and its value, so the text has exactly as many members as `:` outside strings. A
 * duplicate collapses into one property of the parsed value (dropping at least one member), so the
 * parsed value has as many own properties, counted through every nested object, as the text has
 * members if and only if no object has a duplicate name.
 */

/** Thrown by {@link parseStrictJson}: `duplicate` says whether the failure was a duplicate member. */
export class StrictJsonError extends Error {
  constructor(
    message: string,
    readonly duplicate: boolean,
  ) {
    super(message);
  }
}

/** Parses JSON, refusing duplicate member names at any depth. */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new StrictJsonError((e as Error).message, false);
  }
  if (countColons(text) !== countMembers(value)) throw new StrictJsonError('duplicate member name', true);
  return value;
}

function countColons(text: string): number {
  // Fast path, the common case: without a backslash every string ends at the next quote, so the
  // quotes can be found with indexOf instead of a character loop.
  if (text.indexOf('\\') !== -1) return countColonsSlow(text);
  let colons = 0;
  let i = 0;
  let nextColon = text.indexOf(':');
  for (;;) {
    const open = text.indexOf('"', i);
    const end = open === -1 ? text.length : open;
    while (nextColon !== -1 && nextColon < end) {
      colons++;
      nextColon = text.indexOf(':', nextColon + 1);
    }
    if (open === -1) return colons;
    const close = text.indexOf('"', open + 1);
    if (close === -1) return colons;
    i = close + 1;
    if (nextColon !== -1 && nextColon < i) nextColon = text.indexOf(':', i);
  }
}

function countColonsSlow(text: string): number {
  let colons = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      // Skip the string: find the closing quote not preceded by an escaping backslash.
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 92 /* \ */) i += 2;
        else if (d === 34) break;
        else i++;
      }
    } else if (c === 58 /* : */) {
      colons++;
    }
    i++;
  }
  return colons;
}

function countMembers(value: unknown): number {
  if (value === null || typeof value !== 'object') return 0;
  let n = 0;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      if (v !== null && typeof v === 'object') n += countMembers(v);
    }
    return n;
  }
  // Object.keys includes "__proto__" when JSON.parse created it as an own property.
  const keys = Object.keys(value);
  n = keys.length;
  for (let i = 0; i < keys.length; i++) {
    const v = (value as Record<string, unknown>)[keys[i] as string];
    if (v !== null && typeof v === 'object') n += countMembers(v);
  }
  return n;
}
