export interface ViewContext {
  base: string;                 // API base ('' = same origin)
  runId: string;
  nPrompt: number; nOutput: number;
  tokens: { id: number; label: string }[];   // prompt tokens then output tokens (run doc's tokens)
  nLayer: number; nHead: number;
  layer: number | null; head: number | null; // current selection (null = all)
  step: number;                               // current step (0..nOutput-1)
  setStep(t: number): void;                   // move the app's step
}
export interface View { show(ctx: ViewContext): void; hide(): void; }
