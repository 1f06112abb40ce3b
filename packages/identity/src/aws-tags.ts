/** The claim AWS STS reads session tags from (`sts:TagSession` must be allowed in the role's trust policy). */
export const AWS_TAGS_CLAIM = 'https://aws.amazon.com/tags';

/** AWS's limit on a session tag value's length, characters. */
export const AWS_TAG_VALUE_MAX_LENGTH = 256;

/** The shape of the `https://aws.amazon.com/tags` claim. */
export interface AwsSessionTagsClaim {
  /** Tag key → single-element array with the value (AWS's required form). */
  principal_tags: Record<string, string[]>;
  /** Keys that stay on the session through role chaining. */
  transitive_tag_keys: string[];
}

/** What the session tags describe (a run token's claims of the same names). A `null` value is left out. */
export type AwsSessionTagValues = Record<(typeof TAG_KEYS)[number], string | null>;

/** The session tags, in the claim's order. */
const TAG_KEYS = ['workspace', 'project', 'flow', 'deployment', 'deployment_id', 'environment', 'work_pool', 'run_id'] as const;

/**
 * Tags that stay through role chaining: the ones that describe the deployment, not the one run, so a
 * chained role's ABAC policy sees the same attributes as the first.
 */
const TRANSITIVE = ['workspace', 'project', 'flow', 'deployment', 'deployment_id', 'environment'] as const;

/**
 * Makes a value acceptable to AWS as a session tag value: characters outside AWS's set (letters,
 * digits, spaces and `_ . : / = + - @`) become `_`, and the value is cut to 256 characters.
 * STS refuses the whole `AssumeRoleWithWebIdentity` call otherwise, so the token must never carry one.
 * @see https://docs.aws.amazon.com/IAM/latest/UserGuide/id_session-tags.html#id_session-tags_know
 */
export function sanitizeAwsTagValue(value: string): string {
  return Array.from(value.replace(/[^\p{L}\p{Z}\p{N}_.:/=+\-@]/gu, '_'))
    .slice(0, AWS_TAG_VALUE_MAX_LENGTH)
    .join('');
}

/**
 * Builds the `https://aws.amazon.com/tags` claim so AWS ABAC policies can use the run's flow,
 * deployment, environment… as `aws:PrincipalTag/<key>`. AWS cannot read other custom claims.
 * @example buildAwsSessionTags(values).principal_tags.deployment // ['nightly-etl']
 */
export function buildAwsSessionTags(values: AwsSessionTagValues): AwsSessionTagsClaim {
  const principal_tags: Record<string, string[]> = {};
  // Only these keys, whatever else `values` holds: a token's whole claims can be passed.
  for (const key of TAG_KEYS) {
    const value = values[key];
    if (typeof value === 'string') principal_tags[key] = [sanitizeAwsTagValue(value)];
  }
  return { principal_tags, transitive_tag_keys: [...TRANSITIVE] };
}
