export { createFakeClock, type FakeClock } from './clock.js';
export { createTestDatabase, postgresAvailable, type TestDatabase, type TestStore, testDatabaseUrl, testStore } from './database.js';
export {
  createTestBrowser,
  startTestIdp,
  TEST_IDP_USERS,
  type TestBrowser,
  type TestIdp,
  type TestIdpClient,
  type TestIdpOptions,
  type TestIdpUser,
} from './idp.js';
export {
  githubActionsClaims,
  kubernetesClaims,
  type MintOptions,
  startTestIssuer,
  type TestIssuer,
} from './issuer.js';
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
export { REPLICA_MAIN, type ReplicaOptions, type ReplicaProcess, startReplica } from './replica.js';
export { type ClaimedRun, claimRun, failure, putTestDeployment, startTaskRun, textCells } from './runs.js';
export { startTestServer, TEST_SETTINGS, type TestServer } from './server.js';
export { type ProxyTarget, startTcpProxy, type TcpProxy } from './tcp-proxy.js';
export { waitFor } from './wait.js';
