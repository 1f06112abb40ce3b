import type { FlowRun, LogEntry, TaskRunEvent } from '@tessera/core';

/**
 * What {@link runFlowAttached} reports while a run executes in the current process, so a CLI can
 * show live progress: the flow run's state changes, each task run's state changes, and every log
 * line (already redacted).
 */
export type RunEvent = { type: 'flow-run'; run: FlowRun } | { type: 'task-run'; event: TaskRunEvent } | { type: 'log'; entry: LogEntry };
