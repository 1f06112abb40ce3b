import { SUB_TEMPLATE_KEYS, type TesseraError } from '@tessera/core';
import { describe, expect, it } from 'vitest';
import {
  buildDefaultSubject,
  DEFAULT_SUB_TEMPLATE,
  escapeSubjectValue,
  MAX_SUBJECT_LENGTH,
  parseSubTemplate,
  renderSubject,
  SUB_TEMPLATE_LABELS,
  SUB_TEMPLATE_VERSION,
  type SubjectValues,
} from './subject.js';

const values: SubjectValues = {
  workspace: 'default',
  project: 'data',
  flow: 'etl',
  deployment: 'nightly-etl',
  deployment_id: '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f',
  environment: 'prod',
  work_pool: 'k8s',
};

function thrown(f: () => unknown): TesseraError {
  try {
    f();
  } catch (e) {
    return e as TesseraError;
  }
  throw new Error('expected a throw');
}

/** Splits a sub back into [label, value] pairs, decoding values: the inverse a relying party could apply. */
function parse(sub: string): [string, string][] {
  const parts = sub.split(':');
  expect(parts.length % 2).toBe(0);
  const out: [string, string][] = [];
  for (let i = 0; i < parts.length; i += 2) out.push([parts[i] as string, decodeURIComponent(parts[i + 1] as string)]);
  return out;
}

describe('sub template version 1', () => {
  it('renders the default template exactly as before: ws:WORKSPACE:deployment:NAME:env:ENV', () => {
    expect(renderSubject(DEFAULT_SUB_TEMPLATE, values)).toBe('ws:default:deployment:nightly-etl:env:prod');
    expect(buildDefaultSubject({ workspace: 'default', deployment: 'nightly-etl', environment: 'prod' })).toBe(
      'ws:default:deployment:nightly-etl:env:prod',
    );
    expect(SUB_TEMPLATE_VERSION).toBe(1);
  });

  it('renders every key with its label, in the order the template gives', () => {
    expect(SUB_TEMPLATE_LABELS).toEqual({
      workspace: 'ws',
      project: 'project',
      flow: 'flow',
      deployment: 'deployment',
      deployment_id: 'deployment_id',
      environment: 'env',
      work_pool: 'pool',
    });
    for (const key of SUB_TEMPLATE_KEYS) expect(renderSubject([key], values)).toBe(`${SUB_TEMPLATE_LABELS[key]}:${values[key]}`);
    expect(renderSubject(['environment', 'deployment_id'], values)).toBe('env:prod:deployment_id:6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f');
    expect(renderSubject(['work_pool', 'project', 'flow'], values)).toBe('pool:k8s:project:data:flow:etl');
  });

  it('pins an immutable id: the GitHub-style immutable form names deployment_id', () => {
    const renamed = { ...values, deployment: 'nightly-etl-v2' };
    const keys = ['workspace', 'deployment_id', 'environment'] as const;
    expect(renderSubject(keys, renamed)).toBe(renderSubject(keys, values));
  });
});

describe('escaping: no value can forge a separator', () => {
  it('percent-encodes ":" and "%" (and keeps everything else printable as is)', () => {
    expect(escapeSubjectValue('a:b%c')).toBe('a%3Ab%25c');
    expect(escapeSubjectValue('nightly-etl_v2.0/x@y+z=*?')).toBe('nightly-etl_v2.0/x@y+z=*?');
  });

  it('refuses to let deployment "a:env:prod" pass for environment prod', () => {
    const forged = renderSubject(DEFAULT_SUB_TEMPLATE, { ...values, deployment: 'x:env:prod', environment: 'dev' });
    expect(forged).toBe('ws:default:deployment:x%3Aenv%3Aprod:env:dev');
    expect(forged).not.toContain(':env:prod');
    expect(parse(forged)).toEqual([
      ['ws', 'default'],
      ['deployment', 'x:env:prod'],
      ['env', 'dev'],
    ]);
  });

  it('keeps an already-encoded value distinct from the character it encodes', () => {
    expect(escapeSubjectValue('%3A')).toBe('%253A');
    expect(renderSubject(['deployment'], { ...values, deployment: '%3A' })).not.toBe(
      renderSubject(['deployment'], { ...values, deployment: ':' }),
    );
  });

  it('encodes spaces, control characters and non-ASCII as UTF-8, so nothing invisible reaches a trust policy', () => {
    expect(escapeSubjectValue('a b')).toBe('a%20b');
    expect(escapeSubjectValue('line\nbreak\u0000')).toBe('line%0Abreak%00');
    expect(escapeSubjectValue('café')).toBe('caf%C3%A9');
    expect(escapeSubjectValue('\u202Eevil')).toBe('%E2%80%AEevil');
    expect(escapeSubjectValue('\u007F')).toBe('%7F');
  });

  it('is reversible and injective over adversarial values (fuzzed)', () => {
    const alphabet = [':', '%', '3', 'A', 'a', ' ', 'é', '\n', '-', '2', '5'];
    let seed = 42;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const word = () => Array.from({ length: 1 + Math.floor(rand() * 6) }, () => alphabet[Math.floor(rand() * alphabet.length)]).join('');
    const seen = new Map<string, string>();
    for (let i = 0; i < 2000; i++) {
      const v = { ...values, workspace: word(), deployment: word(), environment: word() };
      const sub = renderSubject(DEFAULT_SUB_TEMPLATE, v);
      expect(parse(sub)).toEqual([
        ['ws', v.workspace],
        ['deployment', v.deployment],
        ['env', v.environment],
      ]);
      const key = JSON.stringify([v.workspace, v.deployment, v.environment]);
      const before = seen.get(sub);
      if (before !== undefined) expect(before).toBe(key);
      seen.set(sub, key);
    }
  });
});

describe('length: at most 127 characters (GCP google.subject)', () => {
  const prefix = 'deployment:';
  it('accepts exactly 127 characters and refuses 128, naming the field, the length and the limit', () => {
    const ok = renderSubject(['deployment'], { ...values, deployment: 'x'.repeat(MAX_SUBJECT_LENGTH - prefix.length) });
    expect(ok).toHaveLength(127);
    const e = thrown(() =>
      renderSubject(['deployment'], { ...values, deployment: 'x'.repeat(128 - prefix.length) }, 'identity.subTemplate'),
    );
    expect(e.code).toBe('ERR_VALIDATION');
    expect(e.details).toEqual({ field: 'identity.subTemplate', length: 128, limit: 127 });
    expect(e.message).toMatch(/^identity\.subTemplate: the token subject would be 128 characters \("deployment:x+…"\); the limit is 127/);
    expect(e.message).toContain('Drop keys from the template (now: deployment)');
  });

  it('counts the escaped length: escaping cannot smuggle a sub past the limit', () => {
    // 40 colons are 40 characters as a name but 120 once escaped.
    const e = thrown(() => renderSubject(['deployment'], { ...values, deployment: ':'.repeat(40) }));
    expect(e.details).toMatchObject({ length: prefix.length + 120 });
  });

  it('refuses an over-long default subject too', () => {
    const e = thrown(() => buildDefaultSubject({ workspace: 'default', deployment: 'd'.repeat(120), environment: 'prod' }));
    expect(e.code).toBe('ERR_VALIDATION');
  });
});

describe('parseSubTemplate', () => {
  it('accepts known keys in any order and records version 1', () => {
    expect(parseSubTemplate(['deployment_id', 'workspace'])).toEqual({ version: 1, keys: ['deployment_id', 'workspace'] });
  });

  it.each([
    [[], 'identity.subTemplate', /expected a non-empty list of keys/],
    ['workspace', 'identity.subTemplate', /expected a non-empty list/],
    [['workspace', 'branch'], 'identity.subTemplate[1]', /"branch" is not a sub template key; use one of workspace, project/],
    [['workspace', 'workspace'], 'identity.subTemplate[1]', /"workspace" appears twice/],
  ])('refuses %j with ERR_VALIDATION naming %s', (keys, field, message) => {
    const e = thrown(() => parseSubTemplate(keys, 'identity.subTemplate'));
    expect(e.code).toBe('ERR_VALIDATION');
    expect(e.details).toEqual({ field });
    expect(e.message).toMatch(message);
  });
});
