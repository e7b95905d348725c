// Help for newcomers: a glossary of the words the views use and, per tab, a
// one-page "how to read this view", in one dialog (a native <dialog>: modal,
// keyboard reachable, Esc closes, the focus goes back to the button that
// opened it). mountHelp() adds a "?" button to every tab's panel, wires the
// header's Glossary button (#help-glossary) and gives every tab button that
// has none a title (the page's one-line summary). The texts follow
// docs/ANALYSIS.md and docs/UI.md: keep them true when a view changes.

export interface GlossaryEntry {
  id: string; // data-term
  term: string;
  text: string;
}

/** The glossary, in reading order (the basic words first). */
export const GLOSSARY: readonly GlossaryEntry[] = [
  {
    id: 'token',
    term: 'Token',
    text: 'The unit the model reads and writes: a word, part of a word, a byte or a control symbol such as [BOS], chosen by the model’s tokenizer. The Tokens tab shows how a text splits. A label such as “␣the” starts with a space; ↵ is a line break.',
  },
  {
    id: 'position',
    term: 'Position and step',
    text: 'Positions number every token of a run from 0 (position 0 is usually BOS): the prompt first, then the generated tokens. A step is one generated token; steps are numbered from 1 on screen (“Step 13 of 40”), while the URL and the API count them from 0. Step n was chosen by the query at position n_prompt + n − 2, the last token the model had read; its output sits at position n_prompt + n − 1.',
  },
  {
    id: 'attention',
    term: 'Attention',
    text: 'In each layer and head, the query of the token being processed scores every earlier token (its keys); a softmax turns the scores into weights that sum to 1 over the earlier positions. That row of weights — how much the query looked at each earlier token — is what heed records and draws. It says where the model looked, not whether that mattered: Verify sources tests that by ablation.',
  },
  {
    id: 'head',
    term: 'Head',
    text: 'One of the parallel attention mechanisms of a layer, each with its own row of weights per query. “all heads” is the mean of a layer’s heads; choosing a head shows that head alone. The Heads tab draws every head as a thumbnail and the Statistics tab classifies heads (previous-token, induction, sink, local, other).',
  },
  {
    id: 'layer',
    term: 'Layer',
    text: 'One block of the model (attention, then the feed-forward part), applied in order from layer 0. “all layers” is the mean over every layer and head; one layer is the mean of its heads. The selection above the views applies to every tab that shows attention.',
  },
  {
    id: 'bos',
    term: 'BOS and the attention sink',
    text: 'BOS (beginning of sequence) is the control token many models put at position 0. Most heads park most of their attention there when nothing else is relevant — the “sink” — so its weight says little about meaning and would wash out everything else. The normalized view removes BOS; the Statistics tab reports each row’s sink mass (the weight on position 0).',
  },
  {
    id: 'normalization',
    term: 'Normalized and raw attention',
    text: 'Raw attention is the model’s softmax row as computed: BOS included, the whole row sums to 1. Normalized (the graph’s default line width) removes BOS and splits the row into its prompt part and its earlier-outputs part, each divided by its own sum, so each part sums to 1: a value is “this token’s share of the step’s attention to the prompt” (or to earlier outputs), comparable across steps. The Heatmap and Text tabs show raw attention; hovers give both numbers, labelled.',
  },
  {
    id: 'value-weighted',
    term: 'Value-weighted attention',
    text: 'Attention weight times the size of what the source adds to the head’s output, a × |W_O v| (Kobayashi et al., 2020): a source the head looks at whose value is small contributes little. Chosen with the Graph’s Measure selector; such rows do not sum to 1.',
  },
  {
    id: 'rollout',
    term: 'Attention rollout',
    text: 'An estimate of how attention flows through all layers (Abnar & Zuidema, 2020): each layer’s head mean is mixed half-and-half with the identity (the residual connection) and the layers are multiplied from the top down. One of the Graph’s line widths.',
  },
  {
    id: 'logit-lens',
    term: 'Logit lens',
    text: 'Reading a layer’s intermediate state as if it were the last: the residual stream after the layer goes through the model’s final norm and output matrix, giving the token that layer would have predicted. The last layer’s lens is the model’s own prediction. Shown in the Logit lens tab.',
  },
  {
    id: 'entropy',
    term: 'Entropy',
    text: 'How spread out an attention row is, −Σ p ln p in nats: 0 when all weight is on one token, ln(n) when it is spread evenly over n tokens.',
  },
  {
    id: 'zones',
    term: 'Zones',
    text: 'A label for each position from where its (non-sink) attention went, by distance d from the query: syntax floor (S) when the local band d ≤ 7 holds the most, semantic bridge (B) for the middle band 8–255, structure ripple (R) for d ≥ 256, and none (·) when all attention is on the sink. The largest band wins, ties to the nearer; no tuned thresholds.',
  },
  {
    id: 'fingerprints',
    term: 'Fingerprints',
    text: 'Twenty numbers that summarize one position’s attention row: the mass at distance bins (d = 0, 1, 2–3, 4–7, … ≥ 1024), the sink mass, normalized entropy, the largest weight, the local / mid / far masses, the mean distance and the effective number of sources. All lie in [0, 1], so positions of different runs can be compared; the Statistics tab projects them (PCA of one run, UMAP across runs).',
  },
  {
    id: 'umap',
    term: 'UMAP and HDBSCAN',
    text: 'UMAP lays high-dimensional points out in 2-D keeping near neighbours near (distances between far-apart groups mean little). HDBSCAN finds clusters as regions of high point density and leaves points in sparse regions as noise. The manifold uses both on the fingerprints: nearby points are positions whose attention had a similar shape.',
  },
  {
    id: 'head-types',
    term: 'Head types',
    text: 'A head’s kind from its mean behaviour over the run: previous-token (mean weight on q − 1 ≥ 0.5), sink (mean weight on position 0 ≥ 0.5), local (mass on the last 8 positions ≥ 0.7), induction (mass on the token after an earlier occurrence of the current token ≥ 0.3); the score furthest past its threshold names the kind, else other.',
  },
  {
    id: 'intervention',
    term: 'Ablation and knockout',
    text: 'Experiments that make a new run from a step: ablating a head zeroes its attention output (mean-ablation replaces it by its mean over the prompt); knocking out a token forbids every query from attending to it. The Effects tab compares the new run with the original.',
  },
  {
    id: 'kl',
    term: 'KL divergence (lower bound)',
    text: 'How different two next-token distributions are, in nats. heed stores only the 20 most likely candidates per step, so the Effects tab gives a lower bound of the true divergence, exact when the rest has no mass.',
  },
];

export interface TabHelp {
  title: string;
  summary: string; // one line: the tab button's title
  body: (string | string[])[]; // paragraphs; an array is a bullet list
  terms: string[]; // glossary ids worth reading first
}

/** A page per tab (VIEW_NAMES of src/model.ts). */
export const TAB_HELP: Record<string, TabHelp> = {
  graph: {
    title: 'How to read the Graph',
    summary: 'Which earlier tokens each generated token attended to, as lines from inputs and earlier outputs',
    body: [
      'The prompt’s tokens are the left column, the generated tokens the right one. The slider moves the step (the generated token being chosen); at step n the outputs up to n are shown.',
      [
        'A blue straight line: a prompt token the step’s query attended to; an orange curve: an earlier output it attended to.',
        'Line width is the weight. By default it is normalized: BOS removed, the prompt part and the earlier-outputs part each sum to 1. “raw attention” shows the model’s softmax row instead; “attention rollout” the flow through every layer.',
        'Only lines with a weight at or above the Attention threshold (left) are drawn.',
        'Click a token to see only its lines; Show all connections draws every step up to this one; Reset selection (or Esc) goes back.',
        'The layer / head selectors choose whose attention: the mean of all layers and heads, one layer, or one head.',
        'Hover a token or a line for the exact numbers, raw and normalized, labelled.',
      ],
      'Attention is where the model looked, not proof that it mattered: Verify sources re-runs the step without each top source and reports how much the chosen token’s log-probability drops.',
    ],
    terms: ['attention', 'normalization', 'bos', 'position', 'layer', 'head', 'rollout', 'value-weighted'],
  },
  text: {
    title: 'How to read the Text view',
    summary: 'The run as running text: hover a token to shade what it attended to (Observer) or what attended to it (Observed)',
    body: [
      'The whole run as text, prompt then output (outputs in dark blue). Weights here are raw attention (BOS included), for the layer / head selection.',
      [
        'Observer: hovering a token shades every earlier token by how much the hovered one attended to it (its row).',
        'Observed: hovering a token shades every later token by how much it attended to the hovered one (its column).',
        'The shade is proportional to the weight, scaled to the largest shaded one; BOS is left out of that scale unless “BOS in the scale” is on. The three heaviest tokens are also underlined (double, solid, dotted).',
        'Double-click (or Enter) freezes the token; click the chip or press Esc to unfreeze.',
      ],
      'For models with a sliding window, tokens outside the window are struck out: their weight is exactly 0.',
    ],
    terms: ['attention', 'normalization', 'bos'],
  },
  lens: {
    title: 'How to read the Logit lens',
    summary: 'Per layer and step, the token each layer would have predicted (logit lens)',
    body: [
      'Rows are layers (the last layer on top), columns are steps (▶ marks the current one). Each cell is the most likely token when that layer’s residual stream is read through the final norm and the output matrix; its blue tint grows with that token’s probability.',
      [
        'Green with ✓: the layer already predicts the token the step chose. The first green cell from the bottom is where the model “made up its mind”.',
        'Hover a cell (or ↑/↓ on the grid) for the layer’s top 5 and their probabilities; click to move the step.',
        'The lens is computed on demand, in pages of 16 steps; cells not computed yet show “…”. It needs the model that made the run.',
      ],
    ],
    terms: ['logit-lens', 'layer', 'position'],
  },
  stats: {
    title: 'How to read the Statistics',
    summary: 'Zones, entropy and sink mass, input importance, fingerprint PCA and manifold, head types',
    body: [
      'Numbers about each position’s attention row, for the layer / head selection (the head-type table always covers every head).',
      [
        'Zones: each token coloured and lettered by where its non-sink attention went (S local, B middle, R far, · all on the sink), with a histogram.',
        'Entropy and sink mass per position: how spread out each row is (nats) and how much of it went to position 0; ▼ marks the current step’s query.',
        'Input-token importance: the raw attention each prompt token received, summed over the steps.',
        'Fingerprint PCA: the 20-number fingerprints of this run on their two main axes; marker shape and colour = zone.',
        'Fingerprint manifold: the fingerprints of this run and any stored runs you add, laid out by UMAP (near = similar attention shape) and clustered by HDBSCAN. Colour by zone or by cluster (grey = noise); hover a point for its run, token, step, zone and cluster; click it (or Enter) to open that run at that step.',
        'Head types: each head’s previous-token, induction, sink and local scores and its kind; sort by a column, click a row to select that head.',
      ],
    ],
    terms: ['zones', 'fingerprints', 'entropy', 'bos', 'umap', 'head-types'],
  },
  tokens: {
    title: 'How to read the Tokens view',
    summary: 'How the tokenizer splits the prompt: each token’s text, id and bytes',
    body: [
      'The prompt box’s text (re-tokenized as you type), or the open run’s prompt, as the model’s tokenizer splits it. Each box is one token: its text (␣ a space, ↵ a line break), its id in the vocabulary and the bytes it decodes to.',
      'Special tokens (no bytes, e.g. [BOS]) have a dashed border. “Parse special tokens” lets markers such as <|im_start|> in the text become special tokens.',
    ],
    terms: ['token', 'bos'],
  },
  sampling: {
    title: 'How to read the Sampling view',
    summary: 'The current step’s top candidates and which the sampler settings would keep',
    body: [
      'The 20 most likely next tokens the model gave at the current step (its own softmax). Grey bar: the model’s probability; blue bar: the chance of being drawn with the sliders’ settings.',
      [
        'Temperature 0 is greedy (the most likely token always wins). Otherwise top-k, then top-p, then min-p cut candidates (struck through, with the filter that cut them), and the temperature reshapes the rest.',
        'Only the 20 stored candidates are known, so tokens beyond them are left out; the repetition penalty is not applied here.',
        'Resample here makes a new run from this step with these settings; choose a bar and “Choose this token” forces that token instead.',
      ],
    ],
    terms: ['token', 'position'],
  },
  compare: {
    title: 'How to read the Compare view',
    summary: 'Two runs aligned token by token, with the difference of their attention',
    body: [
      'Pick a second run (B). The two token sequences are aligned (longest common subsequence); a token with no partner is a gap (—).',
      'Each row: run A’s token and weight, the difference B − A as a bar around the centre (orange + to the right: B attends more; blue − to the left: A attends more), then B’s weight and token. Weights are the normalized (split) rows of A’s current step and of B’s step of the aligned token.',
    ],
    terms: ['normalization', 'attention'],
  },
  heatmap: {
    title: 'How to read the Heatmap',
    summary: 'The whole attention matrix of the selection: queries as rows, keys as columns',
    body: [
      'Every query (row) against every key (column), coloured by raw attention (viridis: dark = low, yellow = high; sqrt or linear scale). Grey cells are keys after the query (a token cannot look ahead); the current step’s query row is outlined.',
      [
        'A bright first column is the sink (BOS); a bright diagonal just left of the main one is a previous-token pattern.',
        'Zoom with the wheel, the − / + / Fit buttons or the keys; zoomed out, a cell is the max (or mean) of a block of positions, as the tooltip says.',
        'Click an output row to move the step.',
      ],
    ],
    terms: ['attention', 'bos', 'normalization', 'layer', 'head'],
  },
  heads: {
    title: 'How to read the Heads view',
    summary: 'Every layer and head as a small attention heatmap',
    body: [
      'One thumbnail per (layer, head): its attention matrix pooled to 32 × 32 (max of each block). Patterns to look for: a vertical bar on the left (a sink head), a line just below the diagonal (previous-token), a diagonal offset that repeats (induction).',
      'Hover for layer and head; click (or Enter) to open the head large, from where it can be ablated. The Statistics tab gives each head’s type scores.',
    ],
    terms: ['head', 'layer', 'head-types', 'intervention'],
  },
  experts: {
    title: 'How to read the Experts view',
    summary: 'Mixture-of-experts routing: which experts each layer chose for each token',
    body: [
      'Rows are layers, columns positions; each cell lists the experts the layer’s router chose for that token, best first, on the colour of the top one. Hover for the routing weights.',
      'Below, the load of one layer: how many positions chose each expert (or their summed weight) and a balance figure (1 = every expert used equally).',
    ],
    terms: ['layer', 'position'],
  },
  effects: {
    title: 'How to read the Effects view',
    summary: 'What an intervention changed: this run against the run it branched from, step by step',
    body: [
      'For a run made by an intervention (ablation, knockout, a forced or resampled token): per step, the base run’s token and this run’s token (red and ≠ where they differ; ◆ marks the first difference).',
      'The KL column is a lower bound of the divergence between the two next-token distributions (only 20 candidates are stored per step). The last column is the probability the base token had in the base and has in this run.',
    ],
    terms: ['intervention', 'kl'],
  },
  sources: {
    title: 'How to read the Sources view',
    summary: 'For runs with documents: which document passages each generated sentence drew on',
    body: [
      'The generated text by sentence and the documents by token. Selecting a sentence shades the document spans it drew on (the top one double-underlined) and lists them with their score: the share of the sentence’s value-weighted attention into document text that went to the span.',
      'Verify top sources re-runs each sentence unable to attend to its top span and reports how far its log-probability falls: a large drop means the span really mattered.',
    ],
    terms: ['value-weighted', 'attention', 'intervention'],
  },
};

// ---------------------------------------------------------------- dialog

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

let dialog: HTMLDialogElement | null = null;
let opener: HTMLElement | null = null;

function ensureDialog(): HTMLDialogElement {
  if (dialog) return dialog;
  const d = el('dialog', { id: 'help-dialog', class: 'help-dialog', 'aria-labelledby': 'help-title' });
  const close = el('button', { type: 'button', id: 'help-close', class: 'help-close', title: 'Close the help (Esc)', 'aria-label': 'Close the help' }, '×');
  close.addEventListener('click', () => d.close());
  d.append(el('div', { class: 'help-head' }, el('h2', { id: 'help-title' }), close), el('div', { class: 'help-body', id: 'help-body' }));
  d.addEventListener('close', () => {
    d.removeAttribute('data-page');
    const o = opener;
    opener = null;
    if (o && o.isConnected) o.focus();
  });
  // a click on the backdrop (outside the box) closes too
  d.addEventListener('click', (e) => {
    if (e.target === d) {
      const r = d.getBoundingClientRect();
      if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) d.close();
    }
  });
  document.body.append(d);
  dialog = d;
  return d;
}

function show(page: string, title: string, body: Node[], from: HTMLElement | null): void {
  const d = ensureDialog();
  if (!d.open) opener = from ?? (document.activeElement as HTMLElement | null);
  d.querySelector('#help-title')!.textContent = title;
  const b = d.querySelector('#help-body') as HTMLElement;
  b.replaceChildren(...body);
  b.scrollTop = 0;
  d.dataset.page = page;
  if (!d.open) d.showModal();
  (d.querySelector('#help-close') as HTMLElement).focus();
}

/** Opens the glossary (scrolled to `term` when given). */
export function openGlossary(term?: string, from: HTMLElement | null = null): void {
  const dl = el('dl', { class: 'help-glossary-list' });
  for (const g of GLOSSARY) dl.append(el('dt', { id: `term-${g.id}`, 'data-term': g.id, text: g.term }), el('dd', { text: g.text }));
  show('glossary', 'Glossary', [el('p', { class: 'note', text: 'The words the views use. Each tab’s “?” button explains how to read that view.' }), dl], from);
  if (term) document.getElementById(`term-${term}`)?.scrollIntoView({ block: 'start' });
}

/** Opens a tab's "how to read this view" page. */
export function openTabHelp(view: string, from: HTMLElement | null = null): void {
  const page = TAB_HELP[view];
  if (!page) return openGlossary(undefined, from);
  const nodes: Node[] = [];
  for (const p of page.body) {
    if (Array.isArray(p)) nodes.push(el('ul', {}, ...p.map((li) => el('li', { text: li }))));
    else nodes.push(el('p', { text: p }));
  }
  if (page.terms.length) {
    const terms = el('p', { class: 'help-terms' }, 'Words used here: ');
    page.terms.forEach((id, i) => {
      const g = GLOSSARY.find((x) => x.id === id);
      if (!g) return;
      const b = el('button', { type: 'button', class: 'help-term', 'data-term': id, title: `${g.term}: open the glossary at this entry` }, g.term);
      b.addEventListener('click', () => openGlossary(id));
      if (i) terms.append(', ');
      terms.append(b);
    });
    nodes.push(terms);
  }
  show(`tab-${view}`, page.title, nodes, from);
}

/**
 * Adds a "?" button to each tab's panel (#panel-NAME), wires #help-glossary,
 * and titles the tab buttons (#tab-NAME) that have none. Idempotent.
 */
export function mountHelp(): void {
  for (const [view, page] of Object.entries(TAB_HELP)) {
    const tab = document.getElementById(`tab-${view}`);
    if (tab && !tab.title) tab.title = page.summary;
    const panel = document.getElementById(`panel-${view}`);
    if (!panel || panel.querySelector(':scope > .view-help')) continue;
    const name = tab?.textContent?.trim() || view;
    const b = el(
      'button',
      { type: 'button', class: 'help-btn view-help', 'data-help': view, 'aria-haspopup': 'dialog', title: `How to read the ${name} view`, 'aria-label': `How to read the ${name} view` },
      '?',
    );
    b.addEventListener('click', () => openTabHelp(view, b));
    panel.prepend(b);
  }
  const g = document.getElementById('help-glossary');
  if (g && !g.dataset.wired) {
    g.dataset.wired = '1';
    g.addEventListener('click', () => openGlossary(undefined, g));
  }
}
