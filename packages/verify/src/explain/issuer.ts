import { editDistance, q } from './lib.js';

/** What is wrong with an issuer string compared with the token's `iss`. */
export interface IssuerComparison {
  ok: boolean;
  /** Why they differ, in a few words, when they do: `trailing slash`, `http vs https`, `look-alike host`. */
  diagnosis?: string;
}

function parse(url: string): URL | undefined {
  try {
    return new URL(url);
  } catch {
    return undefined;
  }
}

// Characters people (and attackers) confuse in host names.
const CONFUSABLE: [RegExp, string][] = [
  [/0/g, 'o'],
  [/1/g, 'l'],
  [/rn/g, 'm'],
  [/vv/g, 'w'],
  [/\u0430/g, 'a'],
  [/\u0435/g, 'e'],
  [/\u043e/g, 'o'],
  [/\u0456/g, 'i'],
  [/\u0440/g, 'p'],
  [/\u0441/g, 'c'],
];

function skeleton(host: string): string {
  let s = host.toLowerCase();
  for (const [re, to] of CONFUSABLE) s = s.replace(re, to);
  return s;
}

/**
 * Compares a relying party's configured issuer with a token's `iss`. Relying parties compare
 * exactly (OpenID Connect Discovery §4.3), so any difference refuses the token; the diagnosis names
 * the usual culprits: a trailing slash, `http` vs `https`, a doubled slash, host case, a default
 * port, whitespace, or a look-alike host.
 */
export function compareIssuer(expected: string, actual: string): IssuerComparison {
  if (expected === actual) return { ok: true };
  if (expected.trim() === actual.trim()) return { ok: false, diagnosis: 'whitespace around the issuer' };
  const strip = (s: string) => s.replace(/\/+$/, '');
  if (strip(expected) === strip(actual)) {
    return {
      ok: false,
      diagnosis: expected.endsWith('/')
        ? 'trailing slash: the configured issuer ends with "/", the token\'s iss does not'
        : 'trailing slash: the token\'s iss ends with "/", the configured issuer does not',
    };
  }
  const e = split(expected.trim());
  const a = split(actual.trim());
  if (!e || !a) return { ok: false, diagnosis: `not a URL: ${q(e ? actual : expected)}` };
  const collapse = (p: string) => p.replace(/\/{2,}/g, '/').replace(/\/+$/, '');
  if (e.scheme !== a.scheme && e.host === a.host && e.path === a.path) {
    return { ok: false, diagnosis: `scheme differs: iss uses ${a.scheme}, expected ${e.scheme}` };
  }
  if (e.scheme === a.scheme && e.host === a.host && collapse(e.path) === collapse(a.path)) {
    return { ok: false, diagnosis: 'double slash in the path' };
  }
  if (e.host !== a.host && e.host.toLowerCase() === a.host.toLowerCase()) {
    return { ok: false, diagnosis: 'host case differs (compared as plain strings, so case matters)' };
  }
  if (e.hostname.toLowerCase() === a.hostname.toLowerCase() && e.port !== a.port) {
    return { ok: false, diagnosis: `port differs (${a.port || 'none'} in iss, ${e.port || 'none'} expected): a default port still counts` };
  }
  if (e.host === a.host) {
    return {
      ok: false,
      diagnosis: `${e.scheme !== a.scheme ? 'scheme and ' : ''}path differs (${q(a.path || '/')} in iss, ${q(e.path || '/')} expected)`,
    };
  }
  const eh = e.hostname.toLowerCase();
  const ah = a.hostname.toLowerCase();
  if (skeleton(eh) === skeleton(ah) || editDistance(eh, ah) <= 2) {
    return { ok: false, diagnosis: `look-alike host: ${q(ah)} vs ${q(eh)} — check which one is really your Tessera server` };
  }
  return {
    ok: false,
    diagnosis: `another host (${q(ah)}, expected ${q(eh)}): a token from another issuer, or the server's public URL changed`,
  };
}

/** Scheme, host (with port), hostname, port and path of an issuer, as written (no URL normalisation). */
function split(url: string): { scheme: string; host: string; hostname: string; port: string; path: string } | undefined {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(.*)$/i.exec(url);
  if (!m) return undefined;
  const host = m[2] as string;
  const port = /:(\d*)$/.exec(host)?.[1] ?? '';
  return {
    scheme: (m[1] as string).toLowerCase(),
    host,
    hostname: port ? host.slice(0, host.length - port.length - 1) : host,
    port,
    path: m[3] as string,
  };
}

/** One problem with an issuer string on its own. */
export interface IssuerProblem {
  /** `trailing-slash`, `double-slash`, `http`, `host-case`, `whitespace`, `port`, `query`, `not-url`. */
  kind: 'trailing-slash' | 'double-slash' | 'http' | 'host-case' | 'whitespace' | 'port' | 'query' | 'not-url';
  message: string;
}

/**
 * Problems an issuer string has on its own: things a Tessera issuer never has (a trailing slash, a
 * doubled slash, whitespace, upper-case host, query) and, where the relying party needs it, `https`
 * and no port (AWS and GCP).
 */
export function issuerProblems(issuer: string, options: { requireHttps?: boolean; allowPort?: boolean } = {}): IssuerProblem[] {
  const problems: IssuerProblem[] = [];
  if (issuer !== issuer.trim()) problems.push({ kind: 'whitespace', message: `issuer ${q(issuer)} has whitespace around it` });
  const url = parse(issuer.trim());
  if (!url || !/^https?:$/.test(url.protocol)) {
    problems.push({ kind: 'not-url', message: `issuer ${q(issuer)} is not an http(s) URL` });
    return problems;
  }
  const trimmed = issuer.trim();
  if (/\/$/.test(trimmed))
    problems.push({ kind: 'trailing-slash', message: `issuer ${q(issuer)} ends with "/"; Tessera's iss never does` });
  if (/^[a-z]+:\/\/[^/]*\/.*\/\//i.test(trimmed) || /^[a-z]+:\/\/[^/]*\/\//i.test(trimmed)) {
    problems.push({ kind: 'double-slash', message: `issuer ${q(issuer)} has a doubled "/" in its path` });
  }
  const host = /^[a-z]+:\/\/([^/?#]*)/i.exec(trimmed)?.[1] ?? '';
  if (host !== host.toLowerCase())
    problems.push({ kind: 'host-case', message: `issuer host ${q(host)} has upper-case letters; iss is compared as a plain string` });
  if (url.search || url.hash) problems.push({ kind: 'query', message: `issuer ${q(issuer)} has a query or fragment` });
  if ((options.requireHttps ?? false) && url.protocol !== 'https:') {
    problems.push({ kind: 'http', message: `issuer ${q(issuer)} is not https; this relying party only trusts https issuers` });
  }
  if (options.allowPort === false && url.port)
    problems.push({ kind: 'port', message: `issuer ${q(issuer)} has a port; this relying party accepts none` });
  return problems;
}
