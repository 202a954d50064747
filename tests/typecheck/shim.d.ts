// The page's globals as bridge.js sees them: WPP is the pinned @wppconnect/wa-js, and the
// bridge adds the two functions the Python driver uses.
declare const WPP: typeof import('@wppconnect/wa-js');
/** wa-js's table of event names and payloads. */
type WaEventTypes = import('@wppconnect/wa-js').ev.EventTypes;

interface Window {
  WPP: typeof import('@wppconnect/wa-js');
  __waBridge: (payload: { type: string; data: unknown; snapshot: unknown }) => Promise<void>;
  __waCommands: Record<string, (...args: never[]) => unknown>;
}
