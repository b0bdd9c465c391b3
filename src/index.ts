export { Idefics2 } from "./model.js";
export type { GenerationResult, ModelInfo, LoadCallOptions, ReleasedMemory, ReplicaState, ReplicaStatus } from "./model.js";
export { LoadProgress, LoadStage } from "./load-progress.js";
export { ProgressUnit } from "./progress-event.js";
export { GenerationStream, StreamLeftError } from "./generation-stream.js";
export { ChatSession, ChatOptions } from "./chat-session.js";
export type { ChatTurnOptions, ChatContextUse } from "./chat-session.js";
export type { GenerateCallOptions } from "./prepare-generation.js";
export { user, assistant, system, image, text, Message, Messages, ContentPart, ImagePart, TextPart, Role } from "./messages.js";
export type { PartInput } from "./messages.js";
export {
  LoadOptions,
  GenerationOptions,
  QuantizationMode,
  QuantizationOptions,
  TorchDtype,
  DeviceMap,
  ReplicaDevice,
  MaxMemory,
  ImageLimits,
} from "./options.js";
export type { ResolvedLoadOptions, ResolvedGenerationOptions } from "./options.js";
export { FinishReason, Usage, Timings, GenerateResult, MemoryUse, ReleaseMemoryResult } from "./protocol/messages.js";
export {
  ErrorCode,
  Idefics2Error,
  PythonEnvironmentError,
  InvalidInputError,
  ImageError,
  ModelLoadError,
  GenerationError,
  WorkerCrashedError,
  QueueFullError,
  ProtocolError,
  AbortError,
  TimeoutError,
  ClosedError,
  StructuredOutputError,
} from "./errors.js";
export type { Idefics2ErrorOptions, WorkerCrashDetails, StructuredOutputDetails } from "./errors.js";
export { MAX_CHOICES } from "./structured-output.js";
export type { JsonSchemaObject, OutputSchema, StructureOptions, StructuredObject, StructuredResult } from "./structured-output.js";
export { ImageSource } from "./images/image-source.js";
export { ensurePythonEnvironment, PythonEnvironment, PythonEnvironmentSource } from "./runtime/python-environment.js";
export type { EnsurePythonEnvironmentOptions } from "./runtime/python-environment.js";
export { PythonVersions } from "./runtime/python-versions.js";
export { SetupProgress, SetupStage } from "./runtime/setup-progress.js";
export { runDoctor, DoctorReport, DoctorProblem, DoctorProblemCode } from "./runtime/doctor.js";
export type { DoctorOptions } from "./runtime/doctor.js";
export { demoAssetsPath, embeddedModelPath } from "./embedded-model.js";
export { checkParity } from "./parity/check-parity.js";
export { ParityMethod } from "./parity/parity-options.js";
export type { ParityOptions, ParityCallOptions, ParityProgress } from "./parity/parity-options.js";
export type { ParityReport, ParityCheck, ParityCheckMethod } from "./parity/parity-report.js";
export type { TokenComparison, TokenDifference } from "./parity/compare-token-ids.js";
export type { LogitsComparison } from "./parity/judge-teacher-forcing.js";
export { parityJunitXml } from "./parity/parity-junit.js";
export type { ParityRunFailure } from "./parity/parity-junit.js";
export { ReferenceRunError } from "./parity/reference-run-error.js";
export type { ReferenceRunDetails, ReferenceProgram } from "./parity/reference-run-error.js";
export { createServer, serve, ServerOptions } from "./server/index.js";
export type { Idefics2Server, ServeOptions, Idefics2Extension } from "./server/index.js";
export { connect } from "./remote/connect.js";
export { ConnectOptions } from "./remote/connect-options.js";
export { RemoteIdefics2 } from "./remote/remote-model.js";
export type { RemoteModelInfo } from "./remote/remote-model.js";
