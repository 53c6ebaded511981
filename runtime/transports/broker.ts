// The embedded MQTT broker (aedes, MQTT 3.1.1) that lets robots on this box connect when no other
// broker runs. In memory only: it lives and dies with the daemon.
import { createServer, type Server } from "node:net";
import { Aedes } from "aedes";
import { UserError } from "../../engines/errors.js";

export interface EmbeddedBroker {
  url: string;
  close(): Promise<void>;
}

export async function startBroker(host: string, port: number): Promise<EmbeddedBroker> {
  const aedes = await Aedes.createBroker();
  const server: Server = createServer(aedes.handle);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
  } catch (e) {
    await new Promise<void>((r) => aedes.close(() => r()));
    const code = (e as NodeJS.ErrnoException).code;
    const hint = code === "EADDRINUSE" ? `: is a broker already running there? join it with --mqtt mqtt://${host}:${port}` : "";
    throw new UserError(`embedded broker: cannot listen on ${host}:${port} (${code ?? (e as Error).message})${hint}`);
  }
  const addr = server.address();
  const bound = typeof addr === "object" && addr ? addr.port : port;
  return {
    url: `mqtt://${host}:${bound}`,
    close: async () => {
      await new Promise<void>((r) => aedes.close(() => r()));
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
