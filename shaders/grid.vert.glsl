#version 150
// The survey grid on the ground: faint lines, fogged with distance.
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform mat4 p3d_ModelViewMatrix;
uniform vec2 u_fog_range;
in vec4 p3d_Vertex;
out float v_fog;

void main() {
    float dist = length((p3d_ModelViewMatrix * p3d_Vertex).xyz);
    v_fog = clamp((dist - u_fog_range.x) / max(u_fog_range.y - u_fog_range.x, 1e-3), 0.0, 1.0);
    gl_Position = p3d_ModelViewProjectionMatrix * p3d_Vertex;
}
