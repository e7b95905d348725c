// A small run: 5 prompt tokens (BOS first), 4 outputs, split rows as /graph gives them.
import type { GraphReply } from '../src/model';

export const graphReply: GraphReply = {
  n_prompt: 5,
  n_output: 4,
  prompt: [
    [0.0, 0.1, 0.05, 0.6, 0.25],
    [0.0, 0.049, 0.3, 0.3, 0.351],
    [0.0, 0.5, 0.0, 0.25, 0.25],
    [0.0, 0.04, 0.05000001, 0.9, 0.00999999],
  ],
  output: [[], [1.0], [0.7, 0.3], [0.05, 0.9, 0.05]],
  prompt_mass: [0.9, 0.5, 0.4, 0.3],
  output_mass: [0, 0.3, 0.4, 0.5],
};
