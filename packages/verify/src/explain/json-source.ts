/**
 * Finds keys that appear twice in one JSON object. `JSON.parse` keeps the last one silently, and
 * so do several relying parties: a trust policy with two `StringEquals` blocks in one `Condition`
 * loses the first without a word. Only the text shows it.
 */

/** A key found more than once in the same object. */
export interface DuplicateKey {
  /** JSON path of the object holding the key, e.g. `Statement[0].Condition`. */
  path: string;
  key: string;
}

/**
 * Lists duplicate keys in JSON text (objects at any depth). Malformed text yields what was found
 * before the error; parse the text with `JSON.parse` for the error itself.
 */
export function findDuplicateKeys(text: string): DuplicateKey[] {
  const out: DuplicateKey[] = [];
  let i = 0;
  const ws = () => {
    while (i < text.length && /\s/.test(text[i] as string)) i++;
  };
  const str = (): string => {
    // text[i] === '"'
    let s = '';
    i++;
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') {
        s += text.slice(i, i + 2);
        i += 2;
      } else s += text[i++];
    }
    i++;
    try {
      return JSON.parse(`"${s}"`) as string;
    } catch {
      return s;
    }
  };
  const value = (path: string): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const seen = new Set<string>();
      ws();
      if (text[i] === '}') {
        i++;
        return;
      }
      while (i < text.length) {
        ws();
        if (text[i] !== '"') throw new Error('key expected');
        const key = str();
        if (seen.has(key)) out.push({ path: path || '(root)', key });
        seen.add(key);
        ws();
        if (text[i] !== ':') throw new Error(': expected');
        i++;
        value(path ? `${path}.${key}` : key);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return;
        }
        throw new Error(', or } expected');
      }
    } else if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') {
        i++;
        return;
      }
      let n = 0;
      while (i < text.length) {
        value(`${path}[${n++}]`);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return;
        }
        throw new Error(', or ] expected');
      }
    } else if (c === '"') {
      str();
    } else {
      while (i < text.length && !/[\s,}\]]/.test(text[i] as string)) i++;
    }
  };
  try {
    value('');
  } catch {
    // Malformed: report what was found; JSON.parse reports the error.
  }
  return out;
}
