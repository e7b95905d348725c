// "Open a run file…": a button beside the saved runs that stores a
// `.heedrun` file (heed generate --save, a download) on the server with
// POST /api/runs/upload and hands the new run's id back to open it.
import { uploadRun, type UploadReply } from './api';

export interface UploadHooks {
  /** the upload started (a status line to show) */
  started: (name: string) => void;
  /** stored: open it */
  stored: (reply: UploadReply, name: string) => void;
  /** refused or failed: say why */
  failed: (err: unknown, name: string) => void;
}

/** Adds the button and its hidden file picker to `where`; returns the button. */
export function mountUploadButton(where: HTMLElement, hooks: UploadHooks): HTMLButtonElement {
  const button = document.createElement('button');
  button.id = 'open-run-file';
  button.type = 'button';
  button.textContent = 'Open a run file…';
  button.title = 'Store a run file (.heedrun, from heed generate --save or a download) on this server and open it';
  const input = document.createElement('input');
  input.id = 'run-file';
  input.type = 'file';
  input.accept = '.heedrun,.heed,application/octet-stream';
  input.hidden = true;
  button.addEventListener('click', () => input.click());
  input.addEventListener('change', async () => {
    const file = input.files?.[0];
    input.value = ''; // the same file again is a new choice
    if (!file) return;
    button.disabled = true;
    hooks.started(file.name);
    try {
      hooks.stored(await uploadRun(file), file.name);
    } catch (err) {
      hooks.failed(err, file.name);
    } finally {
      button.disabled = false;
    }
  });
  where.append(button, input);
  return button;
}
