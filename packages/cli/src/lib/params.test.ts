import { describe, expect, it } from 'vitest';
import { EXIT, exitCodeFor, UsageError } from './exit.js';
import { buildParameters, parseParamAssignment, parseParamValue } from './params.js';

describe('parameter parsing', () => {
  it.each([
    ['3', 3],
    ['-1.5', -1.5],
    ['true', true],
    ['null', null],
    ['"007"', '007'],
    ['["a","b"]', ['a', 'b']],
    ['{"x":1}', { x: 1 }],
    ['world', 'world'],
    ['2026-11-28', '2026-11-28'],
    ['', ''],
    ['{not json', '{not json'],
  ])('takes %j as JSON when it parses, else as a string', (raw, expected) => {
    expect(parseParamValue(raw)).toEqual(expected);
  });

  it('splits key=value at the first "=" only', () => {
    expect(parseParamAssignment('query=a=b')).toEqual(['query', 'a=b']);
    expect(parseParamAssignment(' day =2026-11-28')).toEqual(['day', '2026-11-28']);
    expect(parseParamAssignment('empty=')).toEqual(['empty', '']);
  });

  it('rejects a --param without "=" or without a key, as a usage error', () => {
    for (const bad of ['day', '=3', ' =3']) {
      let error: unknown;
      try {
        parseParamAssignment(bad);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(UsageError);
      expect((error as UsageError).code).toBe('ERR_VALIDATION');
      expect((error as UsageError).message).toMatch(/--param /);
      expect(exitCodeFor(error)).toBe(EXIT.usage);
    }
  });

  it('merges --params-json with --param, --param winning', () => {
    expect(buildParameters({ paramsJson: '{"a":1,"b":{"c":2}}', param: ['a=10', 'd=x'] })).toEqual({ a: 10, b: { c: 2 }, d: 'x' });
    expect(buildParameters({})).toEqual({});
    expect(buildParameters({ param: ['n=1', 'n=2'] })).toEqual({ n: 2 });
  });

  it('rejects --params-json that is not a JSON object', () => {
    expect(() => buildParameters({ paramsJson: '[1]' })).toThrow(/must be a JSON object .*found an array/);
    expect(() => buildParameters({ paramsJson: '3' })).toThrow(/must be a JSON object .*found 3/);
    expect(() => buildParameters({ paramsJson: '{oops' })).toThrow(
      expect.objectContaining({ code: 'ERR_VALIDATION', message: expect.stringMatching(/^--params-json is not valid JSON/) }),
    );
  });
});
