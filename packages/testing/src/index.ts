export { createFakeClock, type FakeClock } from './clock.js';
export { createTestDatabase, postgresAvailable, type TestDatabase, type TestStore, testDatabaseUrl, testStore } from './database.js';
export {
  type BackgroundProcess,
  CLI_BIN,
  type CliResult,
  createTestProject,
  REPO_ROOT,
  runCli,
  startCli,
  type TestProject,
} from './project.js';
export { startTestServer, TEST_SETTINGS, type TestServer } from './server.js';
export { waitFor } from './wait.js';
