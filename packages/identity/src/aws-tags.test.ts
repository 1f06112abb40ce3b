import { describe, expect, it } from 'vitest';
import { AWS_TAG_VALUE_MAX_LENGTH, buildAwsSessionTags, sanitizeAwsTagValue } from './aws-tags.js';

const values = {
  workspace: 'default',
  project: 'data',
  flow: 'etl',
  deployment: 'nightly-etl',
  deployment_id: '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f',
  environment: 'prod',
  work_pool: 'k8s',
  run_id: '0b7e4f1a-2c3d-4e5f-8a9b-0c1d2e3f4a5b',
};

/** AWS's documented character set for session tag values. */
const AWS_TAG_VALUE = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;

describe('AWS session tags claim', () => {
  it("tags only its own keys when given a token's whole claims (no worker, trigger, task or sub)", () => {
    const claims = { ...values, worker: 'w-1', trigger_kind: 'manual', task: 'load', sub: 'ws:default:…', iss: 'https://t' };
    expect(Object.keys(buildAwsSessionTags(claims).principal_tags)).toEqual(Object.keys(values));
  });

  it('names flow, deployment, environment, project, work pool… as single-element arrays, with transitive keys', () => {
    const claim = buildAwsSessionTags(values);
    expect(claim.principal_tags).toEqual({
      workspace: ['default'],
      project: ['data'],
      flow: ['etl'],
      deployment: ['nightly-etl'],
      deployment_id: ['6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f'],
      environment: ['prod'],
      work_pool: ['k8s'],
      run_id: ['0b7e4f1a-2c3d-4e5f-8a9b-0c1d2e3f4a5b'],
    });
    expect(claim.transitive_tag_keys).toEqual(['workspace', 'project', 'flow', 'deployment', 'deployment_id', 'environment']);
    for (const k of claim.transitive_tag_keys) expect(claim.principal_tags[k]).toBeDefined();
    // AWS allows 50 session tags; keys are at most 128 characters.
    expect(Object.keys(claim.principal_tags).length).toBeLessThanOrEqual(50);
    for (const k of Object.keys(claim.principal_tags)) expect(k.length).toBeLessThanOrEqual(128);
  });

  it('leaves out the work pool tag when the run has none', () => {
    expect(buildAwsSessionTags({ ...values, work_pool: null }).principal_tags.work_pool).toBeUndefined();
  });

  it("replaces characters outside AWS's tag charset with _ and keeps the allowed ones", () => {
    expect(sanitizeAwsTagValue('etl #1, "daily"*?')).toBe('etl _1_ _daily___');
    expect(sanitizeAwsTagValue('a_b.c:d/e=f+g-h@i j')).toBe('a_b.c:d/e=f+g-h@i j');
    expect(sanitizeAwsTagValue('café-日本')).toBe('café-日本');
    expect(sanitizeAwsTagValue('line\nbreak\ttab')).toBe('line_break_tab');
    const claim = buildAwsSessionTags({ ...values, flow: 'ETL (daily) → S3', deployment: 'a;b|c' });
    for (const [, [v]] of Object.entries(claim.principal_tags)) expect(v).toMatch(AWS_TAG_VALUE);
  });

  it('cuts values to 256 characters, counting characters not UTF-16 units', () => {
    expect(sanitizeAwsTagValue('x'.repeat(300))).toHaveLength(AWS_TAG_VALUE_MAX_LENGTH);
    const emoji = sanitizeAwsTagValue('日'.repeat(300));
    expect(Array.from(emoji)).toHaveLength(256);
  });
});
