import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type AwsRelyingParty, explainAws, parseAwsConfig } from './aws.js';
import type { DecodedToken, ExplainResult } from './types.js';

const text = (name: string) => readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8');
const NOW = new Date('2026-11-28T02:00:00Z');
const T = NOW.getTime() / 1000;
const BASE = JSON.parse(text('token.json')) as DecodedToken;
const HOST = 'tessera.example.com';
const SUB = 'ws:default:deployment:nightly-etl:env:prod';
const DENIED = 'AccessDenied: Not authorized to perform sts:AssumeRoleWithWebIdentity';

function token(claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): DecodedToken {
  const all: Record<string, unknown> = { ...BASE.claims, iat: T - 60, nbf: T - 90, exp: T + 240, ...claims };
  for (const k of Object.keys(all)) if (all[k] === undefined) delete all[k];
  return { header: { ...BASE.header, ...header }, claims: all };
}

const rp = (): AwsRelyingParty => parseAwsConfig(JSON.parse(text('aws-trust.json')));

/** The fixture's policy with another Condition (and optionally other statement fields). */
function withCondition(condition: Record<string, Record<string, unknown>>, statement: Record<string, unknown> = {}): AwsRelyingParty {
  const base = rp();
  return { ...base, policy: { Statement: [{ ...base.policy.Statement[0], Condition: condition, ...statement } as never] } };
}

function failed(r: ExplainResult) {
  return r.checks.filter((c) => !c.ok);
}

describe('explainAws: the provider, audience and time', () => {
  it('accepts a token of the pinned deployment, check by check', () => {
    const r = explainAws(token(), rp(), { now: NOW });
    expect(r.verdict).toBe('accepted');
    expect(r.answer).toBeUndefined();
    expect(r.checks.map((c) => c.id)).toEqual([
      'issuer',
      'audience',
      'algorithm',
      'expiry',
      'not-before',
      'issued-at',
      'aws.principal',
      'aws.action',
      'aws.condition',
      'aws.condition',
    ]);
    expect(r.checks.every((c) => c.ok)).toBe(true);
  });

  it('refuses an http issuer or one with a port: no IAM provider can exist for it', () => {
    for (const iss of ['http://tessera.example.com', 'https://tessera.example.com:8443']) {
      const r = explainAws(token({ iss }), rp(), { now: NOW });
      expect(r.verdict).toBe('refused');
      expect(failed(r)[0]?.id).toBe('issuer');
      expect(r.answer).toBe(`InvalidIdentityToken: No OpenIDConnect provider found in your account for ${iss}`);
    }
  });

  it("refuses an issuer that is not the account's provider, diagnosing a trailing slash", () => {
    const r = explainAws(token({ iss: 'https://tessera.example.com/' }), rp(), { now: NOW });
    expect(failed(r)[0]).toMatchObject({ id: 'issuer', detail: expect.stringContaining('trailing slash') });
    expect(r.answer).toContain('No OpenIDConnect provider found in your account for https://tessera.example.com/');
  });

  it("refuses an audience missing from the provider's client IDs with IAM's answer and the near miss", () => {
    const r = explainAws(token({ aud: 'sts.amazon.com' }), rp(), { now: NOW });
    expect(failed(r)[0]).toMatchObject({ id: 'audience', detail: 'did you mean "sts.amazonaws.com"?' });
    expect(r.answer).toBe('InvalidIdentityToken: Incorrect token audience');
  });

  it('refuses an algorithm IAM does not support', () => {
    const r = explainAws(token({}, { alg: 'HS256' }), rp(), { now: NOW });
    expect(failed(r)[0]?.id).toBe('algorithm');
  });

  it('accepts a token up to 5 minutes after exp (with a warning) and refuses it after', () => {
    const grace = explainAws(token({ exp: T - 200 }), rp(), { now: NOW });
    expect(grace.verdict).toBe('accepted');
    expect(grace.checks.find((c) => c.id === 'expiry')).toMatchObject({ ok: true, flag: 'warning' });
    const late = explainAws(token({ exp: T - 360 }), rp(), { now: NOW });
    expect(failed(late)[0]?.id).toBe('expiry');
    expect(late.answer).toBe(
      `ExpiredTokenException: Token expired: current date/time ${T} must be before the expiration date/time ${T - 360}`,
    );
  });

  it('refuses a token whose nbf or iat is further in the future than the skew', () => {
    const r = explainAws(token({ nbf: T + 600, iat: T - 60 }), rp(), { now: NOW });
    expect(failed(r)[0]?.id).toBe('not-before');
    const iat = explainAws(token({ iat: T + 600 }), rp(), { now: NOW });
    expect(failed(iat)[0]).toMatchObject({ id: 'issued-at', detail: expect.stringContaining('a clock is wrong') });
  });
});

describe('explainAws: the trust policy', () => {
  it('refuses a principal naming another provider, and says which one is needed', () => {
    const r = explainAws(
      token(),
      withCondition(rp().policy.Statement[0]?.Condition ?? {}, {
        Principal: { Federated: 'arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com' },
      }),
      { now: NOW },
    );
    expect(failed(r)[0]).toMatchObject({ id: 'aws.principal', detail: expect.stringContaining(`oidc-provider/${HOST}`) });
    expect(r.answer).toBe(DENIED);
  });

  it('refuses a statement whose Action is not sts:AssumeRoleWithWebIdentity', () => {
    const r = explainAws(token(), withCondition(rp().policy.Statement[0]?.Condition ?? {}, { Action: 'sts:AssumeRole' }), { now: NOW });
    expect(failed(r)[0]?.id).toBe('aws.action');
    expect(r.answer).toBe(DENIED);
  });

  it('accepts wildcard actions (sts:*)', () => {
    const r = explainAws(token(), withCondition(rp().policy.Statement[0]?.Condition ?? {}, { Action: ['sts:*'] }), { now: NOW });
    expect(r.verdict).toBe('accepted');
  });

  it('StringEquals on sub: refuses another environment and names the differing part, with IAM’s answer', () => {
    const r = explainAws(token({ sub: 'ws:default:deployment:nightly-etl:env:staging' }), rp(), { now: NOW });
    expect(r.verdict).toBe('refused');
    const f = failed(r)[0];
    expect(f?.id).toBe('aws.condition');
    expect(f?.message).toBe(`statement 1 (TesseraNightlyEtlProd): condition StringEquals "${HOST}:sub" = "${SUB}"`);
    expect(f?.detail).toBe('token sub is "ws:default:deployment:nightly-etl:env:staging" (environment differs)');
    expect(r.answer).toBe(DENIED);
  });

  it('values are case-sensitive, condition keys are not', () => {
    const upperKey = withCondition({ StringEquals: { 'TESSERA.EXAMPLE.COM:SUB': SUB } });
    expect(explainAws(token(), upperKey, { now: NOW }).verdict).toBe('accepted');
    const upperValue = withCondition({ StringEquals: { [`${HOST}:sub`]: SUB.toUpperCase() } });
    const r = explainAws(token(), upperValue, { now: NOW });
    expect(failed(r)[0]?.detail).toContain('(case differs)');
  });

  it('StringLike: * and ? match, a pattern for another deployment does not', () => {
    const star = withCondition({ StringLike: { [`${HOST}:sub`]: 'ws:default:deployment:nightly-etl:env:*' } });
    expect(explainAws(token({ sub: 'ws:default:deployment:nightly-etl:env:staging' }), star, { now: NOW }).verdict).toBe('accepted');
    const question = withCondition({ StringLike: { [`${HOST}:sub`]: 'ws:default:deployment:nightly-et?:env:prod' } });
    expect(explainAws(token(), question, { now: NOW }).verdict).toBe('accepted');
    const other = withCondition({ StringLike: { [`${HOST}:sub`]: 'ws:default:deployment:reports-*' } });
    expect(explainAws(token(), other, { now: NOW }).verdict).toBe('refused');
  });

  it('StringEquals does not expand wildcards, and says to use StringLike', () => {
    const r = explainAws(token(), withCondition({ StringEquals: { [`${HOST}:sub`]: 'ws:default:deployment:nightly-etl:env:*' } }), {
      now: NOW,
    });
    expect(failed(r)[0]?.detail).toContain('use StringLike');
  });

  it('several values of one key are OR', () => {
    const r = explainAws(token(), withCondition({ StringEquals: { [`${HOST}:sub`]: ['ws:default:deployment:other:env:prod', SUB] } }), {
      now: NOW,
    });
    expect(r.verdict).toBe('accepted');
  });

  it('several keys are AND, several operators are AND', () => {
    const keys = withCondition({ StringEquals: { [`${HOST}:sub`]: SUB, [`${HOST}:aud`]: 'vault.internal' } });
    expect(failed(explainAws(token(), keys, { now: NOW }))[0]?.message).toContain(':aud');
    const ops = withCondition({ StringEquals: { [`${HOST}:sub`]: SUB }, StringLike: { [`${HOST}:aud`]: 'vault.*' } });
    expect(failed(explainAws(token(), ops, { now: NOW }))[0]?.message).toContain('StringLike');
  });

  it('StringNotEquals and StringNotLike refuse the excluded value and accept others', () => {
    const notEq = withCondition({ StringEquals: { [`${HOST}:aud`]: 'sts.amazonaws.com' }, StringNotEquals: { [`${HOST}:sub`]: SUB } });
    expect(explainAws(token(), notEq, { now: NOW }).verdict).toBe('refused');
    expect(explainAws(token({ sub: 'ws:default:deployment:nightly-etl:env:dev' }), notEq, { now: NOW }).verdict).toBe('accepted');
    const notLike = withCondition({ StringEquals: { [`${HOST}:sub`]: SUB }, StringNotLike: { [`${HOST}:sub`]: '*:env:prod' } });
    const r = explainAws(token(), notLike, { now: NOW });
    expect(failed(r)[0]?.detail).toContain('which the negated operator excludes');
  });

  it('a negated operator on an absent key is true, with a warning', () => {
    const r = explainAws(token(), withCondition({ StringEquals: { [`${HOST}:sub`]: SUB }, StringNotEquals: { [`${HOST}:azp`]: 'x' } }), {
      now: NOW,
    });
    expect(r.verdict).toBe('accepted');
    expect(r.checks.find((c) => c.message.includes(':azp'))).toMatchObject({ ok: true, flag: 'warning' });
  });

  it('ForAnyValue: matches any value of a multi-valued claim; refuses when none matches or the claim is absent', () => {
    const cond = withCondition({ StringEquals: { [`${HOST}:sub`]: SUB }, 'ForAnyValue:StringLike': { [`${HOST}:amr`]: 'schedule*' } });
    expect(explainAws(token({ amr: ['manual', 'schedule:nightly'] }), cond, { now: NOW }).verdict).toBe('accepted');
    expect(explainAws(token({ amr: ['manual'] }), cond, { now: NOW }).verdict).toBe('refused');
    expect(failed(explainAws(token(), cond, { now: NOW }))[0]?.detail).toContain('never matches');
  });

  it('ForAllValues: true when the claim is absent — flagged — and requires every value otherwise', () => {
    const cond = withCondition({ StringEquals: { [`${HOST}:sub`]: SUB }, 'ForAllValues:StringEquals': { [`${HOST}:amr`]: ['a', 'b'] } });
    const absent = explainAws(token(), cond, { now: NOW });
    expect(absent.verdict).toBe('accepted');
    expect(absent.checks.find((c) => c.message.includes('ForAllValues'))).toMatchObject({
      flag: 'warning',
      detail: expect.stringContaining('true when the key is absent'),
    });
    expect(explainAws(token({ amr: ['a', 'c'] }), cond, { now: NOW }).verdict).toBe('refused');
    expect(explainAws(token({ amr: ['a', 'b'] }), cond, { now: NOW }).verdict).toBe('accepted');
  });

  it('…IfExists passes when the key is absent and applies when it is present', () => {
    const cond = withCondition({ StringEquals: { [`${HOST}:sub`]: SUB }, StringEqualsIfExists: { [`${HOST}:azp`]: 'tessera' } });
    expect(explainAws(token(), cond, { now: NOW }).verdict).toBe('accepted');
    expect(explainAws(token({ azp: 'other' }), cond, { now: NOW }).verdict).toBe('refused');
  });

  it('a condition on a custom claim never matches: IAM does not expose it', () => {
    const r = explainAws(token(), withCondition({ StringEquals: { [`${HOST}:sub`]: SUB, [`${HOST}:deployment`]: 'nightly-etl' } }), {
      now: NOW,
    });
    expect(r.verdict).toBe('refused');
    expect(failed(r)[0]?.detail).toMatch(/^never matches: IAM makes only aud, sub, amr, azp/);
  });

  it('an explicit Deny wins over an Allow', () => {
    const base = rp();
    const deny = {
      Effect: 'Deny',
      Principal: { Federated: `arn:aws:iam::123456789012:oidc-provider/${HOST}` },
      Action: 'sts:AssumeRoleWithWebIdentity',
      Condition: { StringLike: { [`${HOST}:sub`]: '*:env:prod' } },
    };
    const r = explainAws(token(), { ...base, policy: { Statement: [...base.policy.Statement, deny] } }, { now: NOW });
    expect(failed(r).at(-1)?.id).toBe('aws.deny');
    expect(r.answer).toBe(DENIED);
  });

  it('any one Allow statement is enough', () => {
    const base = rp();
    const other = {
      ...base.policy.Statement[0],
      Sid: 'Other',
      Condition: { StringEquals: { [`${HOST}:sub`]: 'ws:default:deployment:other:env:prod' } },
    };
    const r = explainAws(token(), { ...base, policy: { Statement: [other as never, ...base.policy.Statement] } }, { now: NOW });
    expect(r.verdict).toBe('accepted');
    expect(r.checks.some((c) => c.message.includes('statement 2'))).toBe(true);
  });

  it('session tags need sts:TagSession in the trust policy', () => {
    const tags = { 'https://aws.amazon.com/tags': { principal_tags: { deployment: ['nightly-etl'] } } };
    const r = explainAws(token(tags), rp(), { now: NOW });
    expect(failed(r)[0]?.id).toBe('aws.tag-session');
    expect(r.answer).toBe('AccessDenied: Not authorized to perform sts:TagSession');
    const withTag = withCondition(rp().policy.Statement[0]?.Condition ?? {}, {
      Action: ['sts:AssumeRoleWithWebIdentity', 'sts:TagSession'],
    });
    expect(explainAws(token(tags), withTag, { now: NOW }).verdict).toBe('accepted');
  });

  it('refuses more than 50 session tags', () => {
    const principal_tags = Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`t${i}`, ['v']]));
    const withTag = withCondition(rp().policy.Statement[0]?.Condition ?? {}, {
      Action: ['sts:AssumeRoleWithWebIdentity', 'sts:TagSession'],
    });
    const r = explainAws(token({ 'https://aws.amazon.com/tags': { principal_tags } }), withTag, { now: NOW });
    expect(failed(r)[0]?.id).toBe('aws.session-tags');
    expect(r.answer).toMatch(/^PackedPolicyTooLarge/);
  });

  it('conditions on aws:RequestTag read the session tags', () => {
    const tags = { 'https://aws.amazon.com/tags': { principal_tags: { deployment: ['nightly-etl'] } } };
    const cond = withCondition(
      { StringEquals: { [`${HOST}:sub`]: SUB, 'aws:RequestTag/deployment': 'nightly-etl' } },
      { Action: ['sts:AssumeRoleWithWebIdentity', 'sts:TagSession'] },
    );
    expect(explainAws(token(tags), cond, { now: NOW }).verdict).toBe('accepted');
    expect(explainAws(token(), cond, { now: NOW }).verdict).toBe('refused');
  });

  it('warns about a key written twice in one Condition block', () => {
    const source = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":"arn:aws:iam::123456789012:oidc-provider/${HOST}"},"Action":"sts:AssumeRoleWithWebIdentity","Condition":{"StringEquals":{"${HOST}:sub":"ws:default:deployment:other:env:prod"},"StringEquals":{"${HOST}:aud":"sts.amazonaws.com"}}}]}`;
    const parsed = parseAwsConfig(JSON.parse(source), { source });
    const r = explainAws(token(), parsed, { now: NOW });
    expect(r.checks.find((c) => c.id === 'aws.duplicate-key')).toMatchObject({
      flag: 'warning',
      message: 'Statement[0].Condition has "StringEquals" twice: only the last one counts',
    });
    expect(r.verdict).toBe('accepted'); // the sub condition was dropped, as IAM would
  });

  it('reads `aws iam get-role` output and refuses a policy without any Allow', () => {
    const doc = JSON.parse(text('aws-trust.json')).TrustPolicy;
    expect(parseAwsConfig({ Role: { AssumeRolePolicyDocument: doc } }).policy.Statement).toHaveLength(1);
    const r = explainAws(token(), parseAwsConfig({ Statement: [] }), { now: NOW });
    expect(r.answer).toBe(DENIED);
    expect(() => parseAwsConfig({ Version: '2012-10-17' })).toThrow(/no "Statement"/);
  });
});
