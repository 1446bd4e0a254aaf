// A QR code drawn here, as SVG, from the text it encodes (qrcode-generator, bundled): the secret
// in an otpauth:// URI never leaves the page for a QR service.
import React from "react";
import qrcode from "qrcode-generator";

export function QRCode({ text, id, size = 200 }) {
  const qr = qrcode(0, "M");
  qr.addData(text, "Byte");
  qr.make();
  const n = qr.getModuleCount();
  let d = "";
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) if (qr.isDark(r, c)) d += `M${c + 4} ${r + 4}h1v1h-1z`;
  }
  return (
    <svg id={id} className="qr" role="img" aria-label="QR code" width={size} height={size}
      viewBox={`0 0 ${n + 8} ${n + 8}`} shapeRendering="crispEdges">
      <rect width={n + 8} height={n + 8} fill="#fff" />
      <path d={d} fill="#000" />
    </svg>
  );
}
