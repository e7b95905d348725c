// The graph tab's text panel (#text): the generated tokens as one line of
// text, the current step marked, a token a button that moves the step.
import { displayLabel, type Step } from './model';

export interface TextPanel {
  /** Draws every output (a note when there are none). */
  render(outputs: Step[], generating: boolean): void;
  /** Adds output `i` while streaming (a full render for the first). */
  append(s: Step, i: number, outputs: Step[], generating: boolean): void;
  /** Marks step `t` current, the later ones future. */
  setCurrent(t: number): void;
}

function textSpan(s: Step, i: number): HTMLSpanElement {
  const sp = document.createElement('span');
  sp.className = 'out-tok';
  sp.dataset.index = String(i);
  sp.setAttribute('role', 'button');
  sp.tabIndex = -1;
  const txt = s.text !== undefined ? s.text : s.label;
  sp.textContent = txt;
  if (!txt) sp.classList.add('blank');
  sp.title = `step ${i}: ${displayLabel(s.label)} (id ${s.id})`;
  return sp;
}

export function createTextPanel(box: HTMLElement, setStep: (t: number) => void): TextPanel {
  let shown = -2; // the step shown as current (-2: none marked since the last render)

  const render = (outputs: Step[], generating: boolean): void => {
    box.textContent = '';
    shown = -2;
    if (outputs.length === 0) {
      const p = document.createElement('p');
      p.className = 'note';
      p.textContent = generating ? 'Waiting for the first token…' : 'Nothing generated yet.';
      box.appendChild(p);
      return;
    }
    const frag = document.createDocumentFragment();
    outputs.forEach((s, i) => frag.appendChild(textSpan(s, i)));
    box.appendChild(frag);
  };

  box.addEventListener('click', (e) => {
    const sp = (e.target as HTMLElement).closest('.out-tok') as HTMLElement | null;
    if (sp) setStep(Number(sp.dataset.index));
  });
  box.addEventListener('keydown', (e) => {
    const sp = (e.target as HTMLElement).closest('.out-tok') as HTMLElement | null;
    if (sp && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      setStep(Number(sp.dataset.index));
    }
  });

  return {
    render,
    append(s, i, outputs, generating): void {
      if (i === 0 || box.querySelector('.note')) {
        render(outputs, generating);
        return;
      }
      box.appendChild(textSpan(s, i));
    },
    setCurrent(t): void {
      const spans = box.children;
      const prev = shown;
      shown = t;
      const focusWasIn = document.activeElement instanceof HTMLElement && document.activeElement.classList.contains('out-tok');
      const lo = prev < -1 ? 0 : Math.min(prev, t);
      const hi = prev < -1 ? spans.length - 1 : Math.max(prev, t);
      for (let i = Math.max(0, lo); i <= Math.min(hi, spans.length - 1); i++) {
        const sp = spans[i] as HTMLElement;
        if (!sp.classList.contains('out-tok')) continue;
        sp.classList.toggle('current', i === t);
        sp.classList.toggle('future', i > t);
        sp.tabIndex = i === t ? 0 : -1;
        if (i === t) sp.setAttribute('aria-current', 'step');
        else sp.removeAttribute('aria-current');
      }
      if (t >= 0 && t < spans.length) {
        const cur = spans[t] as HTMLElement;
        if (focusWasIn && document.activeElement !== cur) cur.focus();
      }
    },
  };
}
