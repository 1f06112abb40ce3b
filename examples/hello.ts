import { flow, getLogger } from '@tessera/sdk';
import { z } from 'zod';

/** The smallest flow: validated parameters, a log line, a JSON result. */
export const hello = flow(
  {
    name: 'hello',
    parameters: z.object({ name: z.string().min(1).default('world') }),
  },
  async ({ name }) => {
    getLogger().info(`hello, ${name}!`);
    return { greeting: `hello, ${name}!` };
  },
);
