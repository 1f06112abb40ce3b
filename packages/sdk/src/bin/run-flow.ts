/**
 * Entry of a flow-run process: `node --import tsx <this file>` with the run's environment, started by
 * a worker (which finds it with `import.meta.resolve('@tessera/sdk/run-flow')`).
 * @module
 */
import { runFlowProcess } from '../runner/process.js';

await runFlowProcess();
