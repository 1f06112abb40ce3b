import { describe, expect, it } from 'vitest';
import { CelError, compileCel, glob } from './cel.js';
import { parseStrictJson } from './lib/json.js';
import { compilePolicy } from './policy.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('glob', () => {
  it.each([
    ['*', '', true],
    ['*', 'anything:at/all', true],
    ['a*c', 'abbc', true],
    ['a*c', 'abbcd', false],
    ['a?c', 'abc', true],
    ['a?c', 'ac', false],
    ['?', '', false],
    ['', '', true],
    ['', 'a', false],
    ['ws:acme:deployment:*:env:prod', 'ws:acme:deployment:etl:env:prod', true],
    ['ws:acme:deployment:*:env:prod', 'ws:acme:deployment:etl:env:dev', false],
    ['repo:org/*:ref:refs/heads/main', 'repo:org/x:ref:refs/heads/main', true],
    ['*a*b', 'xxaxxbxxb', true],
    ['a**b', 'ab', true],
    ['[a]', '[a]', true],
    ['.*', 'abc', false],
  ])('glob(%j, %j) is %s', (pattern, value, expected) => {
    expect(glob(pattern, value)).toBe(expected);
  });

  it('treats ? as one character, astral code points included', () => {
    expect(glob('a?c', 'a😀c')).toBe(true);
    expect(glob('a??c', 'a😀c')).toBe(false);
  });

  it('stays fast on patterns that make backtracking matchers explode', () => {
    const value = 'a'.repeat(16_000);
    const t = performance.now();
    expect(glob('*a*a*a*a*a*a*a*a*b', value)).toBe(false);
    expect(glob(`${'a*'.repeat(50)}b`, value)).toBe(false);
    expect(performance.now() - t).toBeLessThan(500);
  });
});

describe('compileCel', () => {
  it('compiles once and evaluates over variables, with glob() available', () => {
    const rule = compileCel('glob("ws:default:deployment:*:env:prod", sub) && run_attempt <= 3', { variables: ['sub', 'run_attempt'] });
    expect(rule.evaluate({ sub: 'ws:default:deployment:etl:env:prod', run_attempt: 1 })).toBe(true);
    expect(rule.evaluate({ sub: 'ws:default:deployment:etl:env:dev', run_attempt: 1 })).toBe(false);
    expect(rule.evaluate({ sub: 'ws:default:deployment:etl:env:prod', run_attempt: 4 })).toBe(false);
    expect(rule.expression).toContain('glob');
  });

  it('accepts any identifier when no variable list is given', () => {
    expect(compileCel('a.b == "x" && "t" in tags').evaluate({ a: { b: 'x' }, tags: ['t'] })).toBe(true);
  });

  it('rejects a syntax error with ERR_CEL_INVALID naming the expression and the column', () => {
    const e = (() => {
      try {
        compileCel('sub == ');
      } catch (err) {
        return err as CelError;
      }
    })();
    expect(e).toBeInstanceOf(CelError);
    expect(e?.code).toBe('ERR_CEL_INVALID');
    expect(e?.message).toMatch(/^invalid CEL expression "sub == ": .*\(at column \d+\)$/);
  });

  it('rejects an unknown variable when variables are declared, listing the known ones', () => {
    expect(() => compileCel('subject == "x"', { variables: ['sub'] })).toThrow(/Unknown variable: subject.*known variables: sub/);
  });

  it('rejects type errors at compile time', () => {
    expect(codeOf(() => compileCel('1 + "a"'))).toBe('ERR_CEL_INVALID');
  });

  it('disables matches(), pointing at glob()', () => {
    expect(() => compileCel('sub.matches("(a+)+$")')).toThrow(/matches\(\) is disabled.*glob/);
    expect(() => compileCel('x || matches(sub, "a")')).toThrow(/matches\(\) is disabled/);
  });

  it('rejects empty, oversized and over-deep expressions', () => {
    expect(codeOf(() => compileCel('  '))).toBe('ERR_CEL_INVALID');
    expect(codeOf(() => compileCel(`x == "${'a'.repeat(5000)}"`))).toBe('ERR_CEL_INVALID');
    expect(codeOf(() => compileCel(`${'('.repeat(40)}1${')'.repeat(40)} == 1`))).toBe('ERR_CEL_INVALID');
  });

  it('reports evaluation failures as ERR_CEL_EVALUATION', () => {
    const rule = compileCel('claims.task == "x"', { variables: ['claims'] });
    expect(codeOf(() => rule.evaluate({ claims: {} }))).toBe('ERR_CEL_EVALUATION');
  });
});

describe('compilePolicy', () => {
  const claims = {
    sub: 'ws:default:deployment:nightly-etl:env:prod',
    environment: 'prod',
    deployment: 'nightly-etl',
    run_attempt: 2,
    tags: ['billing'],
  };
  const denied = (policy: Parameters<typeof compilePolicy>[0], c: Record<string, unknown> = claims) => {
    try {
      compilePolicy(policy).check(c);
      return undefined;
    } catch (e) {
      return e as Error & { code: string; rule?: string };
    }
  };

  it('allows a token matching an allow rule (glob over sub, claims as variables)', () => {
    expect(denied({ allow: ['glob("ws:default:deployment:*:env:prod", sub)'] })).toBeUndefined();
    expect(denied({ allow: ['"billing" in tags && run_attempt >= 2'] })).toBeUndefined();
    expect(denied({ allow: ['claims.environment == "prod"'] })).toBeUndefined();
  });

  it('refuses with ERR_POLICY_DENIED naming the rule set when no allow rule matches', () => {
    const e = denied({ allow: [{ name: 'dev-only', condition: 'environment == "dev"' }, 'deployment == "x"'] });
    expect(e?.code).toBe('ERR_POLICY_DENIED');
    expect(e?.message).toContain('no allow rule matched (allow: "dev-only", "allow[1]")');
    expect(e?.message).toContain('token sub "ws:default:deployment:nightly-etl:env:prod"');
  });

  it('lets deny win over allow, naming the deny rule', () => {
    const e = denied({ allow: ['true'], deny: [{ name: 'no-retries', condition: 'run_attempt > 1' }] });
    expect(e?.code).toBe('ERR_POLICY_DENIED');
    expect(e?.rule).toBe('no-retries');
    expect(e?.message).toContain('deny rule "no-retries" matched');
  });

  it('treats absent optional claims as null', () => {
    expect(denied({ deny: ['task != null'] })).toBeUndefined();
    expect(denied({ deny: ['task != null'] }, { ...claims, task: 'load' })?.code).toBe('ERR_POLICY_DENIED');
  });

  it('fails closed: an allow rule that errors grants nothing, a deny rule that errors denies', () => {
    expect(denied({ allow: ['claims.missing == "x"'] })?.message).toContain('could not be evaluated');
    expect(denied({ deny: ['claims.missing == "x"'] })?.message).toContain('could not be evaluated, which counts as a match');
  });

  it('fails at creation on a bad expression, naming the rule', () => {
    expect(() => compilePolicy({ allow: [{ name: 'typo', condition: 'enviroment == "prod"' }] })).toThrow(/rule "typo"/);
    expect(codeOf(() => compilePolicy({ deny: ['sub =='] }))).toBe('ERR_CEL_INVALID');
    expect(() => compilePolicy({ allow: [] })).toThrow(/policy.allow is empty/);
  });
});

describe('parseStrictJson', () => {
  it('parses JSON without duplicates, colons inside strings included', () => {
    expect(parseStrictJson('{"a":"x:y","b":{"c":[{"d":1},{"d":2}]},"e":"\\":"}')).toEqual({
      a: 'x:y',
      b: { c: [{ d: 1 }, { d: 2 }] },
      e: '":',
    });
  });

  it.each(['{"a":1,"a":2}', '{"a":{"b":1,"b":1}}', '{"a":[{"x":1,"x":{"y":1}}]}', '{"sub":"a","sub":"a"}', '{"a\\u0062":1,"ab":2}'])(
    'refuses duplicate member names: %s',
    (text) => {
      expect(() => parseStrictJson(text)).toThrow(/duplicate/);
    },
  );
});
