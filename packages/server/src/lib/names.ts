import { randomInt } from 'node:crypto';

const ADJECTIVES = ['amber', 'brisk', 'calm', 'crimson', 'daring', 'eager', 'fuzzy', 'gentle', 'hidden', 'icy', 'jolly', 'keen', 'lucky', 'mellow', 'nimble', 'olive', 'proud', 'quiet', 'rapid', 'silver', 'tidy', 'umber', 'vivid', 'witty', 'young', 'zesty'];
const ANIMALS = ['otter', 'heron', 'lynx', 'badger', 'falcon', 'gecko', 'ibis', 'jackal', 'koala', 'lemur', 'marten', 'newt', 'ocelot', 'puffin', 'quail', 'raven', 'stoat', 'tapir', 'urial', 'vole', 'walrus', 'yak', 'zebu', 'bison', 'crane', 'dingo'];

/** A memorable run name, as Prefect gives: `crimson-otter`. Not unique; the id is. */
export function generateRunName(): string {
  return `${ADJECTIVES[randomInt(ADJECTIVES.length)]}-${ANIMALS[randomInt(ANIMALS.length)]}`;
}
