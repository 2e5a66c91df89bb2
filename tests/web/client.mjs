// Calls a RustBill server with connect-es's browser transports (gRPC-Web and Connect), from Node.
// Messages are described at run time from a FileDescriptorSet made from proto/ (no code generation).
//   node client.mjs <descriptor-set.pb> <base-url> <admin-password>
// Prints one JSON object with what each call returned or the error it raised.
import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

const [descriptorPath, baseUrl, password] = process.argv.slice(2);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptorPath)));
const integration = registry.getService("rustbill.integration.IntegrationService");
const identity = registry.getService("rustbill.identity.IdentityService");

async function outcome(promise) {
  try {
    return { ok: await promise };
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: Code[e.code], message: e.rawMessage };
  }
}

async function scenario(transport) {
  const id = createClient(identity, transport);
  const api = createClient(integration, transport);
  const out = {};
  out.wrongPassword = await outcome(id.login({ username: "admin", password: "not the password" }));
  const login = await id.login({ username: "admin", password, userType: "admin" });
  out.login = { role: login.user.role, expiresIn: Number(login.expiresIn), adminPath: login.adminPath };
  const headers = { Authorization: `Bearer ${login.accessToken}` };
  out.me = (await id.getMe({}, { headers })).user.username;
  out.plugins = (await api.listPlugins({}, { headers })).plugins.map((p) => p.pluginId).sort();
  out.badId = await outcome(api.getPlugin({ id: "not a uuid" }, { headers }));
  out.noToken = await outcome(api.listProviders({}));
  out.refreshed = (await id.refreshToken({ refreshToken: login.refreshToken })).refreshToken !== login.refreshToken;
  return out;
}

const result = {
  grpcWeb: await scenario(createGrpcWebTransport({ baseUrl })),
  connectJson: await scenario(createConnectTransport({ baseUrl })),
  connectBinary: await scenario(createConnectTransport({ baseUrl, useBinaryFormat: true })),
};
console.log(JSON.stringify(result));
