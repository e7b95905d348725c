import type { Intervention } from '../interventions';

export interface ViewContext {
  base: string;                 // API base ('' = same origin)
  runId: string;
  nPrompt: number; nOutput: number;
  tokens: { id: number; label: string }[];   // prompt tokens then output tokens (run doc's tokens)
  nLayer: number; nHead: number;
  layer: number | null; head: number | null; // current selection (null = all)
  step: number;                               // current step (0..nOutput-1)
  setStep(t: number): void;                   // move the app's step
  layerWindow?: readonly number[];            // each layer's sliding window (GET /api/model; 0 = every earlier key)
  experts?: { n_expert: number; n_used: number } | null; // the run's routing (a mixture-of-experts model), else null
  branch?: { run: string; step: number; token?: number | null } | null; // a branch of a stored run: where it starts
  interventions?: Intervention[] | null;      // what the run was made with
}
export interface View { show(ctx: ViewContext): void; hide(): void; }
