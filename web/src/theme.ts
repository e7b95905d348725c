// Colours shared by the canvas, the token CSS (style.css keeps the same values) and the exports.
export const COLORS = {
  io: '#1f77b4', // input -> output: blue, straight
  oo: '#ff7f0e', // output -> output: orange, curved
  ioHover: '#0b3d66',
  ooHover: '#a34700',
  input: '#eef2f7',
  inputBorder: '#9aa8ba',
  selected: '#ffd43b',
  selectedBorder: '#111111',
  previous: '#f9c8dc',
  previousBorder: '#c2577f',
  current: '#ff7f6e',
  currentBorder: '#a3261a',
  text: '#1b1f24',
  muted: '#5b6470',
  background: '#ffffff',
} as const;

export const EDGE_ALPHA = 0.8;
