// npm run build && GQLAUTH_URL=http://localhost:8080 node dist/main.js alice 'correct horse battery'
import { runFlow } from "./flow.js";

const [username = "alice", password = "correct horse battery"] = process.argv.slice(2);
const result = await runFlow(process.env.GQLAUTH_URL ?? "http://localhost:8080", username, password, Number(process.env.WAIT_MS ?? 0));
console.log(JSON.stringify(result, null, 2));
